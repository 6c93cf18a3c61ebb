"""The agent's small pure pieces, and how a slow follower of a transfer is fed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from llmop.agent.download import PartialFile, ProgressThrottle, parse_content_range
from llmop.agent.errors import BadPullRequest, body_excerpt, describe_http_failure
from llmop.agent.plan import hf_file_url, hf_listing_url, normalize_sha256
from llmop.agent.pull import manifest_digest, progress_line
from llmop.agent.settings import InvalidAgentSetting, parse_required_models, settings_from_env
from llmop.agent.store import FileRecord, UnsafeLocalPath, check_relative_path
from llmop.agent.transfers import Publish, Transfer, TransferRegistry


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes 100-199/1000", (100, 1000)),
        ("bytes */1000", (None, 1000)),
        ("bytes 0-9/*", (0, None)),
        ("items 0-9/10", (None, None)),
        (None, (None, None)),
    ],
)
def test_content_range_is_read_into_start_and_total(
    header: str | None, expected: tuple[int | None, int | None]
) -> None:
    assert parse_content_range(header) == expected


def test_progress_is_due_at_most_once_per_interval() -> None:
    now = [0.0]
    throttle = ProgressThrottle(0.25, clock=lambda: now[0])
    seen = []
    for step in range(100):  # 100 chunks over one second
        now[0] = step * 0.01
        seen.append(throttle.due())
    assert seen.count(True) == 4


def test_required_models_are_a_json_list_of_local_paths_whose_names_may_hold_commas() -> None:
    assert parse_required_models('["hf/org/repo/main", "url/https/h/a,b/x.gguf/", " "]') == (
        "hf/org/repo/main",
        "url/https/h/a,b/x.gguf",
    )
    assert parse_required_models("[]") == parse_required_models("") == ()
    with pytest.raises(InvalidAgentSetting, match="LLMOP_REQUIRED_MODELS must be a JSON list"):
        parse_required_models('["a/b", 3]')


def test_required_models_written_comma_separated_by_an_earlier_operator_are_still_read() -> None:
    assert parse_required_models(" hf/org/repo/main, url/h/x.gguf ,, ") == (
        "hf/org/repo/main",
        "url/h/x.gguf",
    )
    settings = settings_from_env(
        Path("/m"),
        {"HF_ENDPOINT": "http://mirror:8080/", "HF_TOKEN": "t", "LLMOP_REQUIRED_MODELS": "a/b"},
    )
    assert (settings.hf_endpoint, settings.hf_token, settings.required_models) == (
        "http://mirror:8080",
        "t",
        ("a/b",),
    )
    assert settings_from_env(Path("/m"), {}).hf_endpoint == "https://huggingface.co"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "a//b", "", "./a"])
def test_paths_that_leave_the_models_dir_are_refused(path: str) -> None:
    with pytest.raises(UnsafeLocalPath):
        check_relative_path(path)


def test_a_repos_digest_depends_on_its_files_not_their_order() -> None:
    a = FileRecord(path="a", size=1, sha256="1" * 64)
    b = FileRecord(path="b", size=2, sha256="2" * 64)
    assert manifest_digest([a, b]) == manifest_digest([b, a])
    assert manifest_digest([a, b]) != manifest_digest([a, b.model_copy(update={"sha256": "3" * 64})])


def test_sha256_is_accepted_bare_or_prefixed_in_any_case() -> None:
    assert normalize_sha256("sha256:" + "AB" * 32) == "ab" * 32
    assert normalize_sha256(None) is None
    with pytest.raises(BadPullRequest):
        normalize_sha256("ab" * 31)


def test_hugging_face_urls_quote_revisions_and_paths() -> None:
    assert hf_listing_url("https://hf.co", "org/r", "refs/pr/1") == (
        "https://hf.co/api/models/org/r/revision/refs%2Fpr%2F1?blobs=true"
    )
    assert hf_file_url("https://hf.co", "org/r", "main", "dir/my file.gguf") == (
        "https://hf.co/org/r/resolve/main/dir/my%20file.gguf"
    )


def test_a_failure_quotes_the_start_of_the_body_on_one_line() -> None:
    page = b"<html>\n  <title>502 Bad Gateway</title>\n" + b"x" * 5000
    message = describe_http_failure("GET", "https://h/x", 502, "Bad Gateway", page)
    assert message.startswith("GET https://h/x: 502 Bad Gateway: <html> <title>502 Bad Gateway</title>")
    assert len(message) < 400 and message.endswith("...")
    assert describe_http_failure("GET", "https://h/x", 500, "Internal Server Error", b"") == (
        "GET https://h/x: 500 Internal Server Error"
    )
    assert body_excerpt(b"\xff\xfe broken") == "\ufffd\ufffd broken"


def test_progress_lines_have_ollamas_shape() -> None:
    assert progress_line("m.gguf", None, 5, 10) == {
        "status": "pulling m.gguf",
        "digest": "m.gguf",
        "total": 10,
        "completed": 5,
    }
    assert progress_line("m.gguf", "ab" * 32, 0, None)["digest"] == "sha256:" + "ab" * 32


async def test_a_slow_follower_gets_the_latest_progress_per_file_and_every_status_line() -> None:
    transfer = Transfer("k", "m", None)
    transfer.publish({"status": "pulling manifest"})
    follower = transfer.lines()
    assert await anext(follower) == {"status": "pulling manifest"}
    for completed in range(1000):  # the follower reads nothing meanwhile
        transfer.publish(progress_line("a", None, completed, 1000), "file:a")
    transfer.publish({"status": "verifying sha256 digest"})
    transfer.publish({"status": "success"})

    rest = [line async for line in follower]

    assert rest == [
        progress_line("a", None, 999, 1000),
        {"status": "verifying sha256 digest"},
        {"status": "success"},
    ]


async def test_a_full_disk_is_reported_and_frees_the_model_for_the_next_pull() -> None:
    registry = TransferRegistry()

    async def boom(publish: Publish) -> None:
        raise OSError("No space left on device")

    transfer = registry.start_or_join("k", "m", None, boom)
    lines = [line async for line in transfer.lines()]

    assert lines == [{"error": "the pull of m failed on the models volume: No space left on device"}]
    await asyncio.sleep(0)
    assert registry.get("k") is None


def test_reads_of_every_size_land_whole_and_in_order_with_their_sha256(tmp_path: Path) -> None:
    chunks = [os.urandom(n % 700) for n in range(3000)] + [os.urandom(3 << 20)]
    partial = PartialFile(tmp_path, tmp_path / "model.gguf", tmp_path / "partial")
    partial.open_for_resume(None)
    for chunk in chunks:
        partial.append(chunk)
    partial.close()

    whole = b"".join(chunks)
    assert (tmp_path / "partial").read_bytes() == whole
    assert (partial.size, partial.hasher.hexdigest()) == (len(whole), hashlib.sha256(whole).hexdigest())
