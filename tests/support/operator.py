"""The operator as users run it: `llmop run` in its own process, against the test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The operator's deny list for spec.external in the tests: link-local as by default, but not
#: loopback, where this machine runs the tests' external servers (the API server stays refused:
#: llmop always adds it).
TEST_DENY_CIDRS = "169.254.0.0/16,fe80::/10"


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No metrics server unless a test asks for one: its default port (8080) is also
        # llama-server's, which the pod runner binds at pod addresses on this machine.
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LLMOP_METRICS_PORT": "0",
            "LLMOP_EXTERNAL_DENY_CIDRS": TEST_DENY_CIDRS,
            **self.env,
        }
        log = open(self.log_path, "ab")  # the child owns it
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("llmop")), "run", "--verbose"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: what a crashed or evicted operator pod looks like."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_started(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "llmop started" in self.log():
                return
            if not self.alive():
                raise AssertionError(f"llmop run exited:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"llmop run did not start within {timeout:.0f}s:\n{self.log()[-3000:]}")
