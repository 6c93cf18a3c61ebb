"""Prefix affinity: a conversation's turns return to one pod, conversations spread over the pods,
and a busy pod or one that leaves moves only what it must."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_gateway_server import Pod, backend_of

from llmop.gateway.affinity import affinity_key
from llmop.gateway.balance import Balancer
from llmop.gateway.server import Gateway, GatewaySettings
from llmop.gateway.table import CHAT, COMPLETION, EMBEDDINGS, Upstream, build_table

SYSTEM = {"role": "system", "content": "You answer briefly."}


def turn(conversation: int, number: int) -> dict[str, Any]:
    """The body of turn `number` (1, 2, ...) of a conversation: its history grows each turn."""
    messages: list[dict[str, Any]] = [SYSTEM]
    for earlier in range(1, number + 1):
        messages.append({"role": "user", "content": f"conversation {conversation}, question {earlier}"})
        if earlier < number:
            messages.append({"role": "assistant", "content": f"answer {earlier}"})
    return {"model": "tiny", "messages": messages}


def upstream(pod: str) -> Upstream:
    return Upstream("team-a", "chat", pod, f"http://{pod}:8080/v1")


@pytest.fixture
async def serving() -> AsyncIterator[Callable[..., Awaitable[tuple[TestClient, list[Pod]]]]]:
    """A gateway in front of three pods serving `tiny`, with prefix affinity as asked."""
    started: list[Any] = []

    async def make(prefix_affinity: bool) -> tuple[TestClient, list[Pod]]:
        pods = [await Pod(name).start() for name in ("a", "b", "c")]
        table = build_table([backend_of(pod) for pod in pods])
        gateway = Gateway(GatewaySettings(prefix_affinity=prefix_affinity), table)
        client = TestClient(TestServer(gateway.app()))
        await client.start_server()
        started.extend([client, *(pod.server for pod in pods)])
        return client, pods

    yield make
    for server in started:
        await server.close()


async def served_by(client: TestClient, body: dict[str, Any]) -> str:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    return str((await response.json())["served_by"])


async def test_each_turn_of_a_conversation_returns_to_the_same_pod(serving) -> None:
    client, _ = await serving(prefix_affinity=True)
    for conversation in range(3):
        pods = {await served_by(client, turn(conversation, number)) for number in range(1, 6)}
        assert len(pods) == 1, f"conversation {conversation}'s five turns went to pods {sorted(pods)}"


async def test_conversations_spread_over_the_pods_each_staying_on_its_own(serving) -> None:
    client, _ = await serving(prefix_affinity=True)
    homes: dict[int, set[str]] = {}
    for number in range(1, 4):
        for conversation in range(30):
            homes.setdefault(conversation, set()).add(await served_by(client, turn(conversation, number)))
    assert all(len(pods) == 1 for pods in homes.values()), homes
    spread = Counter(pod for pods in homes.values() for pod in pods)
    assert set(spread) == {"a", "b", "c"}
    assert min(spread.values()) >= 5, spread  # 30 conversations: none of the pods is left idle


async def test_without_the_setting_each_request_goes_to_the_least_loaded_pod_in_turn(serving) -> None:
    client, _ = await serving(prefix_affinity=False)
    pods = [await served_by(client, turn(0, number)) for number in range(1, 4)]
    assert sorted(pods) == ["a", "b", "c"]  # idle pods take turns, whatever the conversation


def homes_of(balancer: Balancer, pods: list[Upstream], conversations: int = 90) -> dict[int, str]:
    keys = {n: affinity_key(CHAT, turn(n, 1)) for n in range(conversations)}
    chosen = {n: balancer.choose(pods, affinity=key) for n, key in keys.items()}
    return {n: pod.pod for n, pod in chosen.items() if pod is not None}


def test_a_pod_leaving_moves_only_its_own_conversations_and_one_joining_takes_only_a_share() -> None:
    balancer = Balancer(clock=lambda: 100.0)
    a, b, c, d = (upstream(name) for name in "abcd")
    before = homes_of(balancer, [a, b, c])
    after = homes_of(balancer, [a, b])
    moved = {n for n in before if before[n] != after[n]}
    assert moved == {n for n, pod in before.items() if pod == "c"}
    assert moved  # c had conversations, and they went to a or b
    joined = homes_of(balancer, [a, b, c, d])
    assert all(joined[n] in (before[n], "d") for n in before)  # none moves but to the new pod
    assert 10 <= sum(pod == "d" for pod in joined.values()) <= 40  # about a quarter of 90


def test_an_affine_pod_much_busier_than_the_others_is_passed_over() -> None:
    balancer = Balancer(clock=lambda: 100.0)
    pods = [upstream(name) for name in "abc"]
    key = affinity_key(CHAT, turn(7, 1))
    affine = balancer.choose(pods, affinity=key)
    assert affine is not None
    for _ in range(2):
        balancer.started(affine)
    assert balancer.choose(pods, affinity=key) == affine  # two more than the idle ones: still its pod
    balancer.started(affine)
    elsewhere = balancer.choose(pods, affinity=key)
    assert elsewhere is not None and elsewhere != affine  # three more: the least-loaded instead
    assert balancer.in_flight[elsewhere.key] == 0
    balancer.finished(affine)
    assert balancer.choose(pods, affinity=key) == affine  # back once it caught up


def test_the_bound_grows_with_the_load() -> None:
    balancer = Balancer(clock=lambda: 100.0)
    pods = [upstream(name) for name in "abc"]
    key = affinity_key(CHAT, turn(7, 1))
    affine = balancer.choose(pods, affinity=key)
    assert affine is not None
    for pod in pods:
        for _ in range(40):
            balancer.started(pod)
    for _ in range(12):
        balancer.started(affine)
    # 52 against 40: the average is 44, a quarter of it 11; 12 more is over the bound.
    assert balancer.choose(pods, affinity=key) != affine
    balancer.finished(affine)
    balancer.finished(affine)
    # 50 against 40: a quarter of the average (43.3) is 10.8; 10 more is within it (2 would not be).
    assert balancer.choose(pods, affinity=key) == affine


def test_a_retry_goes_to_another_pod_the_conversations_next() -> None:
    balancer = Balancer(clock=lambda: 100.0)
    pods = [upstream(name) for name in "abc"]
    key = affinity_key(CHAT, turn(3, 1))
    first = balancer.choose(pods, affinity=key)
    assert first is not None
    balancer.failed(first)
    retry = balancer.choose(pods, tried={first.key}, affinity=key)
    assert retry is not None and retry != first
    assert balancer.choose(pods, affinity=key) == retry  # the next turn, while the first is passed over


def test_the_key_is_what_stays_the_same_across_turns() -> None:
    assert len({affinity_key(CHAT, turn(1, n)) for n in range(1, 6)}) == 1
    assert affinity_key(CHAT, turn(1, 1)) != affinity_key(CHAT, turn(2, 1))
    other_system = {
        **turn(1, 1),
        "messages": [{"role": "system", "content": "Be verbose."}, *turn(1, 1)["messages"][1:]],
    }
    assert affinity_key(CHAT, other_system) != affinity_key(CHAT, turn(1, 1))
    long_prompt = "Once upon a time " * 200
    assert affinity_key(COMPLETION, {"prompt": long_prompt}) == affinity_key(
        COMPLETION, {"prompt": long_prompt + "more"}
    )
    assert affinity_key(COMPLETION, {"prompt": "a"}) != affinity_key(COMPLETION, {"prompt": "b"})
    tokens = list(range(1000))
    assert affinity_key(COMPLETION, {"prompt": tokens}) == affinity_key(COMPLETION, {"prompt": [*tokens, 5]})
    assert affinity_key(COMPLETION, {"prompt": [long_prompt, "x"]}) == affinity_key(
        COMPLETION, {"prompt": long_prompt}
    )


@pytest.mark.parametrize(
    ("capability", "body"),
    [
        (EMBEDDINGS, {"input": "hi"}),
        (CHAT, {"messages": "hi"}),
        (CHAT, {"messages": []}),
        (CHAT, {"messages": [1, 2]}),
        (CHAT, {}),
        (COMPLETION, {"prompt": {"text": "hi"}}),
        (COMPLETION, {"prompt": []}),
        (COMPLETION, {"prompt": ""}),
    ],
)
def test_a_body_without_a_prefix_has_no_key_and_goes_to_the_least_loaded(
    capability: str, body: dict[str, Any]
) -> None:
    assert affinity_key(capability, body) is None


def test_odd_messages_are_keyed_without_reading_all_of_them() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5_000_000}}
    photo = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}
    assert affinity_key(CHAT, {"messages": [photo]}) is not None
    odd = {"role": {"nested": ["x"] * 10}, "content": ["not a part", {"text": 5}]}
    assert affinity_key(CHAT, {"messages": [odd]}) is not None
    surrogate = {"role": "user", "content": "\ud800 lone"}
    assert affinity_key(CHAT, {"messages": [surrogate]}) is not None
