"""Leader election on a coordination.k8s.io Lease, so that replicas of llmop never act at once.

The algorithm is client-go's: the holder renews `spec.renewTime` every retry period; a standby
takes over only after it has seen the same record unchanged for `leaseDurationSeconds` (timed
on its own monotonic clock, so clock skew between nodes does not matter). Every write is a PUT
carrying the resourceVersion it read, so two standbys racing for an expired Lease cannot both
win. A holder that cannot renew for `renew_deadline` (shorter than the lease duration) stops
acting before any standby may start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from llmop.k8s.client import LEASES, KubeAPIError, KubeClient

logger = logging.getLogger(__name__)

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity() -> str:
    """The pod's name (set by the chart from the downward API), else host and a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The pod's own namespace: from the chart's env, the service account mount, or `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElector:
    kube: KubeClient
    name: str
    namespace: str
    identity: str
    duration: float = 15.0
    renew_deadline: float | None = None  # default: two thirds of the duration
    retry_period: float | None = None  # default: duration / 7.5 (2 s for 15 s), at least 0.5 s
    is_leader: bool = False
    last_attempt: float = field(default_factory=time.monotonic)
    _observed: tuple[str, str] | None = None
    _observed_at: float = 0.0

    def __post_init__(self) -> None:
        if self.renew_deadline is None:
            self.renew_deadline = self.duration * 2 / 3
        if self.retry_period is None:
            self.retry_period = max(0.5, self.duration / 7.5)

    @property
    def holder(self) -> str:
        """Who holds the Lease as last read ('' when released or never read)."""
        return self._observed[0] if self._observed else ""

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_time(datetime.now(UTC))
        spec = dict(previous or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if previous else 0)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, math.ceil(self.duration)),
            renewTime=now,
        )
        return spec

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when this process holds the Lease afterwards."""
        self.last_attempt = time.monotonic()
        lease = await self.kube.get(LEASES, self.name, self.namespace)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            try:
                created = await self.kube.create(LEASES, body)
            except KubeAPIError as error:
                if error.status_code == 409:  # another replica created it first
                    return False
                raise
            self._observe(created["spec"])
            return True
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if time.monotonic() - self._observed_at < duration:
                return False  # the holder renewed within its lease: it is alive
            logger.info("the Lease of %s expired; taking over", holder)
        lease["spec"] = self._spec(spec)
        try:
            updated = await self.kube.replace(LEASES, lease)
        except KubeAPIError as error:
            if error.status_code == 409:  # someone wrote it since we read it: read again next round
                return False
            raise
        self._observe(updated["spec"])
        return True

    async def _round(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (KubeAPIError, httpx.HTTPError) as error:
            logger.warning("Lease %s/%s: %s", self.namespace, self.name, error)
            return False

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the Lease (True) or `stop` is set (False)."""
        assert self.retry_period is not None
        logger.info("waiting for the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if await self._round():
                self.is_leader = True
                logger.info("acquired the Lease %s/%s as %s", self.namespace, self.name, self.identity)
                return True
            try:
                # A little jitter, so standbys do not read and write in lockstep.
                await asyncio.wait_for(stop.wait(), self.retry_period * random.uniform(1.0, 1.2))
            except TimeoutError:
                pass
        return False

    async def hold(self) -> None:
        """Renew until leadership is lost: another holder took it, or renewals failed too long."""
        assert self.retry_period is not None and self.renew_deadline is not None
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            if await self._round():
                renewed = time.monotonic()
                continue
            if self.holder not in ("", self.identity):
                logger.error("the Lease is held by %s now", self.holder)
                break
            if time.monotonic() - renewed >= self.renew_deadline:
                logger.error("could not renew the Lease for %.0fs", time.monotonic() - renewed)
                break
        self.is_leader = False

    async def release(self) -> None:
        """Give the Lease up (on a clean exit), so that a standby takes over at once."""
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(datetime.now(UTC)),
            }
            await self.kube.replace(LEASES, lease)
            logger.info("released the Lease %s/%s", self.namespace, self.name)
        except (KubeAPIError, httpx.HTTPError) as error:
            logger.warning("could not release the Lease (a standby takes over when it expires): %s", error)
        finally:
            self.is_leader = False
