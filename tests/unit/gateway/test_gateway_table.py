"""The routing table from LLMBackend objects: which pods a request for a model may go to."""

from __future__ import annotations

from llmop.gateway.balance import Balancer
from llmop.gateway.cli import gateway_namespaces
from llmop.gateway.table import build_table
from support.gateway_backends import backend, pod


def test_routes_a_model_to_the_pods_that_serve_it_and_not_to_one_still_loading() -> None:
    body = backend(
        pods=[
            pod("chat-0", "10.0.0.1", ["tiny"]),
            pod("chat-1", "10.0.0.2", ["tiny"]),
            pod("chat-2", "10.0.0.3", [], "Loading"),
        ],
        models=[
            {"name": "tiny", "capabilities": ["chat", "completion"], "contextLength": 256, "loaded": True}
        ],
    )
    table = build_table([body], {("team-a", "chat"): "s3cret"})
    (route,) = table.lookup("tiny")
    assert [u.base_url for u in route.serving] == ["http://10.0.0.1:8080/v1", "http://10.0.0.2:8080/v1"]
    assert {u.api_key for u in route.serving} == {"s3cret"}
    assert (route.context_length, route.loaded, route.runtime) == (256, True, "llamacpp")
    assert route.can("chat") and not route.can("embeddings")
    assert table.model_names() == ["tiny"]


def test_a_pod_that_lists_other_models_is_not_a_target() -> None:
    body = backend(
        pods=[pod("a", "10.0.0.1", ["m1"]), pod("b", "10.0.0.2", ["m2"])],
        models=[{"name": "m1"}, {"name": "m2"}],
    )
    table = build_table([body])
    assert [u.pod for u in table.lookup("m1")[0].serving] == ["a"]
    assert [u.pod for u in table.lookup("m2")[0].serving] == ["b"]


def test_a_pod_whose_list_status_cut_short_may_serve_every_model_status_lists() -> None:
    listed = [f"m{i:02}" for i in range(10)]  # status keeps 10 names per pod
    body = backend(pods=[pod("a", "10.0.0.1", listed)], models=[{"name": f"m{i:02}"} for i in range(12)])
    assert [u.pod for u in build_table([body]).lookup("m11")[0].serving] == ["a"]


def test_a_model_of_a_loading_backend_is_coming_and_of_a_ready_one_is_unknown() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "qwen3:0.6b"}]}
    loading = build_table([backend(phase="Loading", spec=spec)])
    (route,) = loading.lookup("qwen3:0.6b")
    assert route.coming and route.serving == ()
    # Ready without the spec's name in status: the runtime calls it something else.
    assert build_table([backend(phase="Ready", spec=spec)]).lookup("qwen3:0.6b") == ()


def test_a_loading_backend_is_known_by_the_names_clients_will_send() -> None:
    spec = {"runtime": "llamacpp", "models": [{"name": "hf://ggml-org/models/tinyllamas/stories260K.gguf"}]}
    loading = build_table([backend(phase="Deploying", spec=spec)])
    assert loading.model_names() == ["ggml-org/models/tinyllamas/stories260K.gguf"]
    assert loading.lookup("ggml-org/models/tinyllamas/stories260K.gguf")[0].coming


def test_a_model_on_its_way_is_not_judged_by_the_flags_of_the_models_served_now() -> None:
    spec = {"runtime": "ollama", "models": [{"name": "tiny:latest"}]}
    nothing_yet = {"chat": False, "completions": False, "embeddings": False}
    loading = build_table([backend(phase="Loading", spec=spec, capabilities=nothing_yet)])
    (route,) = loading.lookup("tiny:latest")
    assert route.coming and route.can("chat")


def test_a_generic_openai_server_is_judged_by_its_own_flags_not_the_guess_per_model() -> None:
    spec = {"external": {"url": "http://10.1.2.3:8000", "kind": "openai"}}
    everything = {"chat": True, "completions": True, "embeddings": True, "tools": True}
    ready = backend(
        spec=spec,
        models=[{"name": "embedder", "capabilities": ["chat", "completion", "tools"]}],
        capabilities=everything,
        openaiBaseURL="http://10.1.2.3:8000/v1",
    )
    ready["status"]["runtime"] = "openai"
    (route,) = build_table([ready]).lookup("embedder")
    assert route.can("embeddings")


def test_an_external_server_is_one_upstream_while_ready() -> None:
    spec = {"external": {"url": "http://10.1.2.3:8000/v1", "kind": "vllm"}}
    ready = backend(spec=spec, models=[{"name": "big"}], openaiBaseURL="http://10.1.2.3:8000/v1")
    (route,) = build_table([ready]).lookup("big")
    assert [(u.pod, u.base_url) for u in route.serving] == [("external", "http://10.1.2.3:8000/v1")]
    failed = {**ready, "status": {**ready["status"], "phase": "Failed"}}
    assert build_table([failed]).lookup("big")[0].serving == ()


def test_capabilities_come_from_the_model_then_the_backend_else_anything_goes() -> None:
    pods = [pod("a", "10.0.0.1", ["m"])]
    per_model = backend(pods=pods, models=[{"name": "m", "capabilities": ["embeddings"]}])
    assert not build_table([per_model]).lookup("m")[0].can("chat")
    backend_wide = backend(
        pods=pods, models=[{"name": "m"}], capabilities={"chat": True, "completions": True}
    )
    route = build_table([backend_wide]).lookup("m")[0]
    assert route.can("completion") and not route.can("embeddings")
    assert build_table([backend(pods=pods, models=[{"name": "m"}])]).lookup("m")[0].can("embeddings")


def test_an_ipv6_pod_address_is_bracketed() -> None:
    body = backend(pods=[pod("a", "fd00::5", ["m"])], models=[{"name": "m"}])
    assert build_table([body]).lookup("m")[0].serving[0].base_url == "http://[fd00::5]:8080/v1"


def test_a_backend_the_models_cannot_read_is_left_out_and_named() -> None:
    broken = backend(name="odd", spec={"runtime": "nonsense"})
    fine = backend(pods=[pod("a", "10.0.0.1", ["m"])], models=[{"name": "m"}])
    table = build_table([broken, fine])
    assert table.model_names() == ["m"]
    assert table.unreadable[0].startswith("team-a/odd:")


def test_the_same_model_in_two_backends_gives_two_routes() -> None:
    one = backend(name="one", pods=[pod("a", "10.0.0.1", ["m"])], models=[{"name": "m"}])
    two = backend(name="two", pods=[pod("b", "10.0.0.2", ["m"])], models=[{"name": "m"}])
    assert [r.backend for r in build_table([one, two]).lookup("m")] == ["one", "two"]


def test_the_least_loaded_pod_is_chosen_and_a_failed_one_passed_over() -> None:
    body = backend(pods=[pod("a", "10.0.0.1", ["m"]), pod("b", "10.0.0.2", ["m"])], models=[{"name": "m"}])
    a, b = build_table([body]).lookup("m")[0].serving
    balancer = Balancer(clock=lambda: 100.0)
    balancer.started(a)
    assert balancer.choose([a, b]) == b
    balancer.started(b)
    balancer.started(b)
    assert balancer.choose([a, b]) == a
    balancer.failed(a)
    assert balancer.choose([a, b]) == b  # a failed a moment ago: b, though busier
    assert balancer.choose([a, b], tried={b.key}) == a  # but a rather than nothing
    assert balancer.choose([a, b], tried={a.key, b.key}) is None


def test_idle_pods_take_turns() -> None:
    body = backend(pods=[pod("a", "10.0.0.1", ["m"]), pod("b", "10.0.0.2", ["m"])], models=[{"name": "m"}])
    upstreams = build_table([body]).lookup("m")[0].serving
    balancer = Balancer()
    assert {balancer.choose(upstreams).pod for _ in range(2)} == {"a", "b"}  # type: ignore[union-attr]


def test_the_gateway_serves_the_namespaces_given_else_configured_else_its_own_never_all() -> None:
    assert gateway_namespaces(["b", "a", "b"], {}) == ["a", "b"]
    assert gateway_namespaces(None, {"LLMOP_GATEWAY_NAMESPACES": "x, y,", "POD_NAMESPACE": "z"}) == ["x", "y"]
    assert gateway_namespaces(None, {"POD_NAMESPACE": "z"}) == ["z"]
    assert gateway_namespaces(None, {}) == []
