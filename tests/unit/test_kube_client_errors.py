"""What the Kubernetes client raises: a refusal, or an API server that is away for now."""

from __future__ import annotations

import httpx
import pytest

from llmop.k8s.client import PODS, KubeAPIError, KubeClient, KubeUnavailable


def client_answering(answer: httpx.Response | Exception) -> KubeClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return KubeClient(
        httpx.AsyncClient(base_url="https://127.0.0.1:6443", transport=httpx.MockTransport(handle))
    )


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ConnectError("All connection attempts failed"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(503, text="etcdserver: request timed out"),
        httpx.Response(500, json={"message": "etcdserver: leader changed"}),
        httpx.Response(429, text="too many requests"),
    ],
)
async def test_an_api_server_that_is_away_is_unavailable_not_a_refusal(answer: object) -> None:
    kube = client_answering(answer)  # type: ignore[arg-type]
    with pytest.raises(KubeUnavailable):
        await kube.list(PODS, "default")
    await kube.close()


async def test_a_refusal_stays_a_refusal_with_the_servers_words() -> None:
    body = {"kind": "Status", "message": "spec.replicas: Invalid value: -1", "reason": "Invalid"}
    kube = client_answering(httpx.Response(422, json=body))
    with pytest.raises(KubeAPIError) as caught:
        await kube.list(PODS, "default")
    assert not isinstance(caught.value, KubeUnavailable)
    assert (caught.value.status_code, caught.value.message) == (422, "spec.replicas: Invalid value: -1")
    await kube.close()


async def test_a_watch_yields_each_event_line_and_a_refused_watch_says_why() -> None:
    from llmop.k8s.client import LLMBACKENDS

    lines = b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n\n{"type": "DELETED", "object": {}}\n'
    kube = client_answering(httpx.Response(200, content=lines))
    events = [event async for event in kube.watch(LLMBACKENDS, "team-a", "41")]
    assert [event["type"] for event in events] == ["ADDED", "DELETED"]
    refused = client_answering(httpx.Response(403, text='llmbackends is forbidden: cannot watch in "b"'))
    with pytest.raises(KubeAPIError, match="forbidden"):
        [event async for event in refused.watch(LLMBACKENDS, "b", "1")]
    await kube.close()
    await refused.close()
