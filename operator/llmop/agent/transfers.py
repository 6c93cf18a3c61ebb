"""One transfer per model, however many callers follow it.

A pull runs in its own task, not in the request that started it: a client that disconnects
(an operator restarting) loses no work, and the next request for the same model follows the
same transfer from where it is. Only `DELETE /api/pull` cancels one.

Each follower has its own buffer of lines, keyed like the transfer's replay: a newer progress
line for a file replaces an unread older one, so a slow follower holds at most one line per file
plus the status lines, and never misses the final one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

from llmop.agent.errors import PullError

Line = dict[str, Any]


class Publish(Protocol):
    """Send a line to every follower; lines with the same key supersede each other (a file's
    progress), lines without one are kept in order."""

    def __call__(self, line: Line, key: str | None = None) -> None: ...


Work = Callable[[Publish], Awaitable[None]]

SUCCESS: Line = {"status": "success"}
logger = logging.getLogger("llmop.agent")


def is_final(line: Line) -> bool:
    return "error" in line or line.get("status") == "success"


class _Follower:
    def __init__(self, backlog: dict[str, Line]) -> None:
        self.pending = dict(backlog)
        self.wakeup = asyncio.Event()
        if self.pending:
            self.wakeup.set()

    def push(self, key: str, line: Line) -> None:
        self.pending.pop(key, None)  # re-inserted last: lines stay in the order they were published
        self.pending[key] = line
        self.wakeup.set()


class Transfer:
    def __init__(self, key: str, name: str, expected_sha256: str | None) -> None:
        self.key = key
        self.name = name
        self.expected_sha256 = expected_sha256
        self.task: asyncio.Task[None] | None = None
        self.final: Line | None = None
        self._replay: dict[str, Line] = {}
        self._followers: set[_Follower] = set()
        self._status_count = 0

    def publish(self, line: Line, key: str | None = None) -> None:
        if key is None:
            self._status_count += 1
            key = "final" if is_final(line) else f"status-{self._status_count}"
        elif self._replay.get(key) == line:
            return  # nothing new for this file
        if is_final(line):
            self.final = line
        self._replay.pop(key, None)
        self._replay[key] = line
        for follower in self._followers:
            follower.push(key, line)

    async def lines(self) -> AsyncGenerator[Line, None]:
        """Every line so far (latest progress per file), then the live ones, up to the final line."""
        follower = _Follower(self._replay)
        self._followers.add(follower)
        try:
            while True:
                if not follower.pending:
                    follower.wakeup.clear()
                    await follower.wakeup.wait()
                    continue
                key = next(iter(follower.pending))
                line = follower.pending.pop(key)
                yield line
                if is_final(line):
                    return
        finally:
            self._followers.discard(follower)


class TransferRegistry:
    def __init__(self) -> None:
        self._active: dict[str, Transfer] = {}

    def get(self, key: str) -> Transfer | None:
        return self._active.get(key)

    def start_or_join(self, key: str, name: str, expected_sha256: str | None, work: Work) -> Transfer:
        """The transfer in progress for `key`, or a new one running `work`."""
        running = self._active.get(key)
        if running is not None:
            return running
        transfer = Transfer(key, name, expected_sha256)
        self._active[key] = transfer
        transfer.task = asyncio.create_task(self._run(transfer, work), name=f"pull {name}")
        return transfer

    async def _run(self, transfer: Transfer, work: Work) -> None:
        logger.info("pull of %s started", transfer.name)
        try:
            await work(transfer.publish)
        except asyncio.CancelledError:
            logger.info("pull of %s cancelled", transfer.name)
            transfer.publish(
                {"error": f"the pull of {transfer.name} was cancelled; a new pull resumes where it stopped"}
            )
            raise
        except PullError as error:
            logger.warning("pull of %s failed: %s", transfer.name, error)
            transfer.publish({"error": str(error)})
        except OSError as error:  # network errors arrive as PullError; this is the disk
            logger.warning("pull of %s failed on the models volume: %s", transfer.name, error)
            transfer.publish({"error": f"the pull of {transfer.name} failed on the models volume: {error}"})
        except Exception as error:  # a bug; the followers must still hear of it
            logger.exception("pull of %s failed unexpectedly", transfer.name)
            transfer.publish(
                {"error": f"the pull of {transfer.name} failed: {type(error).__name__}: {error}"}
            )
        else:
            logger.info("pull of %s succeeded", transfer.name)
            transfer.publish(SUCCESS)
        finally:
            self._active.pop(transfer.key, None)

    async def cancel(self, key: str) -> bool:
        """Cancel the transfer for `key` and wait until it stopped; False when none runs."""
        transfer = self._active.get(key)
        if transfer is None or transfer.task is None:
            return False
        transfer.task.cancel()
        await asyncio.wait([transfer.task])
        return True

    async def cancel_all(self) -> None:
        tasks = [transfer.task for transfer in self._active.values() if transfer.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
