"""Operations that fail: each failure a runtime can cause raises its own error, with a message
that names the runtime, the request and what went wrong."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiohttp import web
from fake_runtimes import (
    close_without_answer,
    half_answer_then_close,
    json_reply,
    never_answer,
    reset_connection,
    trickle_forever,
)

from llmop.runtimes import (
    AuthFailed,
    MalformedResponse,
    ProbeState,
    ResponseTooLarge,
    RuntimeAPIError,
    RuntimeHTTPError,
    RuntimeTimeout,
    RuntimeUnavailable,
    connect,
)


async def test_refused_connection_is_runtime_unavailable(closed_port_url: str) -> None:
    async with connect("ollama", closed_port_url) as runtime:
        with pytest.raises(RuntimeUnavailable, match="refused the connection") as caught:
            await runtime.list_models()
    assert caught.value.probe_state is ProbeState.STARTING


async def test_reset_connection_is_runtime_unavailable(raw_server) -> None:
    url = await raw_server(reset_connection)
    async with connect("vllm", url) as runtime:
        with pytest.raises(RuntimeUnavailable, match="closed the connection before answering GET /v1/models"):
            await runtime.list_models()


async def test_connection_closed_before_answer_is_runtime_unavailable(raw_server) -> None:
    url = await raw_server(close_without_answer)
    async with connect("vllm", url) as runtime:
        with pytest.raises(RuntimeUnavailable, match="closed the connection before answering"):
            await runtime.list_models()


async def test_server_dying_mid_answer_is_runtime_unavailable(raw_server) -> None:
    url = await raw_server(half_answer_then_close)
    async with connect("vllm", url) as runtime:
        with pytest.raises(RuntimeUnavailable, match="in the middle of its answer to GET /v1/models"):
            await runtime.list_models()


async def test_silence_is_runtime_timeout(raw_server) -> None:
    url = await raw_server(never_answer)
    async with connect("llamacpp", url, timeout=0.3) as runtime:
        with pytest.raises(RuntimeTimeout, match=r"did not answer GET /v1/models within 0\.3s"):
            await runtime.list_models()


async def test_a_trickling_answer_is_cut_at_the_timeout(raw_server) -> None:
    """Each read succeeds, so only a limit on the whole exchange stops this from hanging."""
    url = await raw_server(trickle_forever)
    async with connect("vllm", url, timeout=0.5) as runtime:
        started = time.monotonic()
        with pytest.raises(RuntimeTimeout):
            await runtime.list_models()
    assert time.monotonic() - started < 5


async def test_503_is_runtime_unavailable_while_loading(fake_runtime) -> None:
    server = await fake_runtime(
        {"GET /v1/models": lambda request: json_reply({"error": {"message": "Loading model"}}, 503)}
    )
    async with connect("llamacpp", server.url) as runtime:
        with pytest.raises(RuntimeUnavailable, match="Loading model") as caught:
            await runtime.list_models()
    assert caught.value.probe_state is ProbeState.LOADING


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refusal_is_auth_failed(fake_runtime, status: int) -> None:
    server = await fake_runtime(
        {"GET /v1/models": lambda request: json_reply({"error": "Unauthorized"}, status)}
    )
    async with connect("vllm", server.url, api_key="not-the-key") as runtime:
        with pytest.raises(AuthFailed, match=f"{status}.*Unauthorized.*API key") as caught:
            await runtime.list_models()
    assert caught.value.status_code == status
    assert "not-the-key" not in str(caught.value)


async def test_other_http_errors_carry_the_runtimes_text(fake_runtime) -> None:
    server = await fake_runtime(
        {"GET /api/tags": lambda request: json_reply({"error": "disk full: /root/.ollama"}, 500)}
    )
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(RuntimeHTTPError) as caught:
            await runtime.list_models()
    assert caught.value.status_code == 500
    assert caught.value.runtime_message == "disk full: /root/.ollama"
    assert "500 Internal Server Error" in str(caught.value)
    assert "GET /api/tags" in str(caught.value)


async def test_text_that_is_not_json_is_described_not_quoted(fake_runtime) -> None:
    page = "<html>proxy error</html>"
    server = await fake_runtime(
        {"GET /v1/models": lambda request: web.Response(text=page, content_type="text/html")}
    )
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(MalformedResponse) as caught:
            await runtime.list_models()
    assert "GET /v1/models with HTTP 200 text/html, 24 bytes, not the JSON vLLM's /v1/models answers" in str(
        caught.value
    )
    assert "proxy error" not in str(caught.value)


#: What an internal page (a cloud metadata endpoint, an admin console) might answer.
_INTERNAL_PAGE = "<html><body>ami-id: ami-0abc AccessKeyId=AKIAIOSFODNN7EXAMPLE token=s3cr3t</body></html>"


@pytest.mark.parametrize("status", [200, 403, 404, 500, 503])
async def test_an_internal_pages_text_never_reaches_the_message(fake_runtime, status: int) -> None:
    server = await fake_runtime(
        {
            "GET /v1/models": lambda request: web.Response(
                text=_INTERNAL_PAGE, status=status, content_type="text/html", reason="token=s3cr3t"
            )
        }
    )
    async with connect("openai", server.url) as runtime:
        probe = await runtime.probe()
        with pytest.raises(RuntimeAPIError) as caught:
            await runtime.list_models()
    for text in (probe.reason, str(caught.value), getattr(caught.value, "runtime_message", "")):
        assert "AKIA" not in text and "s3cr3t" not in text and "ami-" not in text, text
    assert f"HTTP {status} text/html, {len(_INTERNAL_PAGE)} bytes" in str(caught.value) or status == 404


async def test_a_404_page_that_is_not_the_runtimes_asks_whether_the_kind_is_right(fake_runtime) -> None:
    server = await fake_runtime(
        {
            "GET /v1/models": lambda request: web.Response(
                text=_INTERNAL_PAGE, status=404, content_type="text/html"
            )
        }
    )
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(RuntimeHTTPError, match=r"404 Not Found; is the server at .* really vLLM\?"):
            await runtime.list_models()


async def test_json_of_the_wrong_shape_is_described_without_its_values(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": {"data": [{"object": "model", "secret": "s3cr3t"}]}})
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(MalformedResponse) as caught:
            await runtime.list_models()
    assert "HTTP 200 application/json" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


async def test_empty_body_is_malformed(fake_runtime) -> None:
    server = await fake_runtime({"GET /api/tags": lambda request: web.Response(status=200)})
    async with connect("ollama", server.url) as runtime:
        with pytest.raises(MalformedResponse, match="an empty body"):
            await runtime.list_models()


async def test_json_of_the_wrong_shape_is_malformed_naming_the_field(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": {"data": [{"object": "model"}]}})
    async with connect("vllm", server.url) as runtime:
        with pytest.raises(MalformedResponse, match=r"data\.0\.id: Field required"):
            await runtime.list_models()


async def test_declared_oversized_body_is_refused_before_reading(fake_runtime) -> None:
    big = {"data": [{"id": "x" * 5000}]}
    server = await fake_runtime({"GET /v1/models": big})
    async with connect("vllm", server.url, max_body_bytes=1000) as runtime:
        with pytest.raises(ResponseTooLarge, match="the limit is 1000 bytes") as caught:
            await runtime.list_models()
    assert caught.value.limit_bytes == 1000


async def test_streamed_oversized_body_is_cut_at_the_limit(fake_runtime) -> None:
    """No Content-Length: the adapter counts bytes as they come and stops at the bound."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"data": [')
        for _ in range(10_000):
            await response.write(b'{"id": "padding"},')
        return response

    server = await fake_runtime({"GET /v1/models": endless})
    async with connect("vllm", server.url, max_body_bytes=4096) as runtime:
        with pytest.raises(ResponseTooLarge, match="more than 4096 bytes"):
            await runtime.list_models()


async def test_bearer_key_is_sent_on_every_request(fake_runtime) -> None:
    server = await fake_runtime(
        {
            "GET /v1/models": {"data": [{"id": "tiny", "meta": None}]},
            "GET /props": {"default_generation_settings": {"n_ctx": 512}},
        }
    )
    async with connect("llamacpp", server.url, api_key="s3cret") as runtime:
        await runtime.list_models()
    assert [request.headers.get("Authorization") for request in server.requests] == ["Bearer s3cret"] * 2


async def test_no_authorization_header_without_a_key(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": {"data": []}})
    async with connect("vllm", server.url) as runtime:
        await runtime.list_models()
    assert "Authorization" not in server.requests[0].headers


async def test_shared_client_is_reused_and_left_open(fake_runtime) -> None:
    first = await fake_runtime({"GET /v1/models": {"data": [{"id": "a"}]}})
    second = await fake_runtime({"GET /v1/models": {"data": [{"id": "b"}]}})
    async with httpx.AsyncClient() as client:
        for server in (first, second, first):
            async with connect("vllm", server.url, client=client) as runtime:
                await runtime.list_models()
        assert not client.is_closed
        # Still usable after the adapters closed: the operator's client outlives them.
        assert (await client.get(first.url + "/v1/models")).status_code == 200


async def test_own_client_is_closed_with_the_adapter(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": {"data": []}})
    runtime = connect("vllm", server.url)
    await runtime.list_models()
    await runtime.aclose()
    with pytest.raises(RuntimeError):
        await runtime.list_models()


async def test_base_url_with_v1_suffix_is_accepted(fake_runtime) -> None:
    server = await fake_runtime({"GET /v1/models": {"data": [{"id": "tiny"}]}})
    async with connect("openai", server.url + "/v1/") as runtime:
        assert runtime.base_url == server.url
        assert [model.name for model in await runtime.list_models()] == ["tiny"]


async def test_every_error_is_a_runtime_api_error(closed_port_url: str) -> None:
    """One `except RuntimeAPIError` is enough for a caller, whatever the operation."""
    async with connect("ollama", closed_port_url) as runtime:
        for operation in (runtime.list_models(), runtime.list_running(), runtime.delete_model("x")):
            with pytest.raises(RuntimeAPIError):
                await operation
        with pytest.raises(RuntimeAPIError):
            await runtime.warmup("x", timeout=1)
        with pytest.raises(RuntimeAPIError):
            async for _ in runtime.pull("x"):
                pass


async def test_concurrent_requests_on_one_adapter(fake_runtime) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return json_reply({"data": [{"id": "m"}]})

    server = await fake_runtime({"GET /v1/models": slow})
    async with connect("vllm", server.url) as runtime:
        results = await asyncio.gather(*(runtime.list_models() for _ in range(10)))
    assert all(result[0].name == "m" for result in results)
