#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, from binaries built by hack/build-cluster-bins.sh.

etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler and kwok run as local
processes. kwok simulates three nodes: two GPU nodes advertising `nvidia.com/gpu` with the labels
and NoSchedule taint the NVIDIA GPU operator puts on real GPU nodes, and one CPU node. Each node
has a pod CIDR in 127.0.0.0/8, so the pods kwok marks Running get loopback addresses that test
processes can listen on. Clusters running side by side (two test sessions) each take their own
block 127.<block>.0.0/16, so no two pods anywhere on the machine get the same address.

    python hack/localcluster.py up [--name NAME]     # prints the kubeconfig path
    python hack/localcluster.py down [--name NAME]
    python hack/localcluster.py status [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HACK_DIR = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("LLMOP_CACHE", Path.home() / ".cache" / "llmop"))

GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPUS_PER_NODE = 2
#: Each node's pod CIDR is 127.<the cluster's block>.<subnet>.0/24.
NODES: list[dict[str, Any]] = [
    {"name": "gpu-node-0", "gpus": GPUS_PER_NODE, "subnet": 0, "ip": "127.0.10.1"},
    {"name": "gpu-node-1", "gpus": GPUS_PER_NODE, "subnet": 1, "ip": "127.0.10.2"},
    {"name": "cpu-node-0", "gpus": 0, "subnet": 2, "ip": "127.0.10.3"},
]
#: The block of a cluster started before blocks were recorded.
DEFAULT_POD_BLOCK = 1
# kwok's own stage definitions, read from the kwok module that built the binary.
KWOK_STAGES = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
]


def binaries() -> dict[str, Path]:
    """Build (or find, when cached) the control plane; NAME -> path."""
    result = subprocess.run(
        [str(HACK_DIR / "build-cluster-bins.sh")], check=True, capture_output=True, text=True
    )
    found = {}
    for line in result.stdout.splitlines():
        name, _, path = line.partition(": ")
        if path:
            found[name.strip()] = Path(path.strip())
    missing = [name for name, path in found.items() if not path.is_file()]
    if missing or not found:
        raise RuntimeError(f"control-plane binaries missing after build: {missing or 'all'}")
    return found


def versions() -> dict[str, str]:
    pinned = {}
    for line in (HACK_DIR / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pinned[key.strip()] = value.strip()
    return pinned


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, what: str, timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s\n{tail}")


@dataclass
class LocalCluster:
    name: str = "llmop"
    #: Each component's command line, kept in the state so that it can be started again.
    _argv: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return CACHE / (self.name if self.name != "llmop" else "cluster")

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def _state(self) -> dict[str, Any]:
        return json.loads(self._state_file.read_text()) if self._state_file.exists() else {}

    # --- lifecycle -------------------------------------------------------------------------

    def up(self) -> Path:
        if self.healthy():
            return self.kubeconfig
        self.down()
        bins = binaries()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        ports = {"etcd": free_port(), "etcd_peer": free_port(), "apiserver": free_port(), "kwok": free_port()}
        self._write_certs()
        self._write_kubeconfig(ports["apiserver"])
        pids: dict[str, int] = {}
        state = {"ports": ports, "pids": pids, "pod_block": self._free_pod_block(), "argv": self._argv}
        self._save(state)  # the block is taken from here on

        data = self.dir / "etcd-data"
        pids["etcd"] = self._start(
            "etcd",
            [
                bins["etcd"],
                "--name",
                "llmop",
                "--data-dir",
                data,
                "--listen-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{ports['etcd']}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{ports['etcd_peer']}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{ports['etcd_peer']}",
                "--initial-cluster",
                f"llmop=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes",
                str(4 << 30),
            ],
        )
        self._save(state)
        pki = self.dir / "pki"
        pids["kube-apiserver"] = self._start(
            "kube-apiserver",
            [
                bins["kube-apiserver"],
                "--etcd-servers",
                f"http://127.0.0.1:{ports['etcd']}",
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(ports["apiserver"]),
                "--tls-cert-file",
                pki / "apiserver.crt",
                "--tls-private-key-file",
                pki / "apiserver.key",
                "--client-ca-file",
                pki / "ca.crt",
                "--service-account-key-file",
                pki / "sa.pub",
                "--service-account-signing-key-file",
                pki / "sa.key",
                "--service-account-issuer",
                "https://kubernetes.default.svc",
                "--authorization-mode",
                "Node,RBAC",
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        self._save(state)
        wait_for(
            lambda: self._kubectl_ok("get", "--raw", "/readyz"),
            "kube-apiserver",
            timeout=90,
            log=self.dir / "logs" / "kube-apiserver.log",
        )
        admin = ["--kubeconfig", self.kubeconfig]
        pids["kube-controller-manager"] = self._start(
            "kube-controller-manager",
            [
                bins["kube-controller-manager"],
                *admin,
                "--leader-elect=false",
                "--secure-port",
                "0",
                "--service-account-private-key-file",
                pki / "sa.key",
                "--root-ca-file",
                pki / "ca.crt",
                "--cluster-name",
                self.name,
                "--controllers",
                "*,-nodeipam,-cloud-node-lifecycle",
                # Claims need a provisioner; the in-tree hostPath one is made for local clusters.
                "--enable-hostpath-provisioner=true",
                "--concurrent-deployment-syncs",
                "10",
                "--concurrent-replicaset-syncs",
                "10",
            ],
        )
        pids["kube-scheduler"] = self._start(
            "kube-scheduler", [bins["kube-scheduler"], *admin, "--leader-elect=false", "--secure-port", "0"]
        )
        pids["kwok"] = self._start(
            "kwok",
            [
                bins["kwok"],
                *admin,
                "--config",
                self._write_kwok_config(),
                "--manage-nodes-with-annotation-selector",
                "kwok.x-k8s.io/node=fake",
                "--server-address",
                f"127.0.0.1:{ports['kwok']}",
                "--node-lease-duration-seconds",
                "40",
            ],
        )
        self._save(state)
        self._create_nodes()
        self._create_storage_class()
        wait_for(self._nodes_ready, "3 Ready nodes", timeout=60, log=self.dir / "logs" / "kwok.log")
        wait_for(
            lambda: self._kubectl_ok("get", "serviceaccount", "default", "-n", "default"),
            "the default ServiceAccount",
            timeout=60,
        )
        return self.kubeconfig

    def down(self) -> None:
        pids = self._state().get("pids", {})
        for name in reversed(list(pids)):
            self._stop(pids[name])
        if self.dir.exists():
            subprocess.run(["rm", "-rf", str(self.dir / "etcd-data"), str(self._state_file)], check=False)

    def healthy(self) -> bool:
        state = self._state()
        if not state or not self.kubeconfig.exists():
            return False
        alive = all(pid_alive(pid) for pid in state.get("pids", {}).values())
        return alive and len(state.get("pids", {})) == 5 and self._kubectl_ok("get", "--raw", "/readyz")

    @property
    def pod_block(self) -> int:
        return int(self._state().get("pod_block", DEFAULT_POD_BLOCK))

    def _free_pod_block(self) -> int:
        """The lowest pod address block no other running cluster under $LLMOP_CACHE holds."""
        taken = set()
        for state_file in CACHE.glob("*/state.json"):
            if state_file.parent == self.dir:
                continue
            try:
                other = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            if any(pid_alive(pid) for pid in other.get("pids", {}).values()):
                taken.add(int(other.get("pod_block", DEFAULT_POD_BLOCK)))
        return next(block for block in range(1, 255) if block not in taken)

    def stop_component(self, name: str) -> None:
        """Stop one component (e.g. kube-apiserver) to test how clients cope; `start_component`
        starts it again as it was (`up` would make a new cluster)."""
        state = self._state()
        self._stop(state["pids"].pop(name))
        self._save(state)

    def start_component(self, name: str) -> None:
        """Start a stopped component again with the arguments it was first started with."""
        state = self._state()
        state["pids"][name] = self._start(name, state["argv"][name])
        self._save(state)

    def restart_component(self, name: str) -> None:
        """Stop and start one component: after an outage of the API, client-go's controllers
        can wait out a long relist backoff; a restarted one lists at once."""
        self.stop_component(name)
        self.start_component(name)

    # --- pieces ----------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binaries_cached()["kubectl"]), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
        )

    def _kubectl_ok(self, *args: str) -> bool:
        return self.kubectl(*args, "--request-timeout=5s", check=False).returncode == 0

    def _start(self, name: str, argv: list[Any]) -> int:
        log = open(self.dir / "logs" / f"{name}.log", "ab")  # the child process owns it
        self._argv[name] = [str(arg) for arg in argv]
        process = subprocess.Popen(
            self._argv[name],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return process.pid

    @staticmethod
    def _stop(pid: int) -> None:
        if not pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _save(self, state: dict[str, Any]) -> None:
        self._state_file.write_text(json.dumps(state))

    def _write_certs(self) -> None:
        pki = self.dir / "pki"
        if (pki / "admin.crt").exists():
            return
        pki.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=llmop-local-ca",
        )
        (pki / "apiserver.ext").write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth\n"
        )
        (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject, ext in [
            ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
            ("admin", "/O=system:masters/CN=llmop-admin", "client.ext"),
        ]:
            openssl(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subject,
            )
            openssl(
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.crt",
                "-days",
                "3650",
                "-extfile",
                ext,
            )
        openssl("genrsa", "-out", "sa.key", "2048")
        openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_kubeconfig(self, port: int) -> None:
        pki = self.dir / "pki"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority": str(pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": "admin"}}],
            "current-context": self.name,
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))

    def _write_kwok_config(self) -> Path:
        kwok_module = (
            Path(
                subprocess.run(
                    ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
                ).stdout.strip()
            )
            / f"sigs.k8s.io/kwok@{versions()['KWOK_VERSION']}"
        )
        stages = [(kwok_module / stage).read_text() for stage in KWOK_STAGES]
        path = self.dir / "kwok.yaml"
        path.write_text("\n---\n".join(stages))
        return path

    def _create_nodes(self) -> None:
        nodes = [_node_manifest(node, self.pod_block) for node in NODES]
        self.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(node) for node in nodes))

    def _create_storage_class(self) -> None:
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(storage_class))

    def _nodes_ready(self) -> bool:
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return False
        items = json.loads(result.stdout)["items"]
        ready = [
            node
            for node in items
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", [])
            )
        ]
        return len(ready) == len(NODES)


def _node_manifest(node: dict[str, Any], pod_block: int) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": node["name"],
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    pod_cidr = f"127.{pod_block}.{node['subnet']}.0/24"
    spec: dict[str, Any] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}
    if node["gpus"]:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": GPU_PRODUCT,
            "nvidia.com/gpu.count": str(node["gpus"]),
            "nvidia.com/gpu.memory": "81559",
        }
        resources["nvidia.com/gpu"] = str(node["gpus"])
        spec["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node["name"],
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "addresses": [{"type": "InternalIP", "address": node["ip"]}],
        },
    }


_BINARIES: dict[str, Path] = {}


def binaries_cached() -> dict[str, Path]:
    if not _BINARIES:
        _BINARIES.update(binaries())
    return _BINARIES


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--name", default="llmop", help="cluster name (folder under $LLMOP_CACHE)")
    args = parser.parse_args()
    cluster = LocalCluster(args.name)
    if args.action == "up":
        started = time.monotonic()
        path = cluster.up()
        print(f"cluster {args.name!r} up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        print(path)
    elif args.action == "down":
        cluster.down()
    else:
        print("up" if cluster.healthy() else "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
