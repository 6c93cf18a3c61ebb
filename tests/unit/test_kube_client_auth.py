"""The Kubernetes client sends the token a kubeconfig (or the in-cluster service account) gives."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from llmop.k8s.client import PODS, KubeClient


async def test_a_kubeconfig_token_is_sent_as_a_bearer_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: use the kubeconfig
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}
        ],
        "users": [{"name": "u", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    kube = KubeClient.from_environment(str(path))
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"items": []})

    kube.http = httpx.AsyncClient(
        base_url=str(kube.http.base_url), auth=kube.http.auth, transport=httpx.MockTransport(answer)
    )
    try:
        await kube.list(PODS, "default")
    finally:
        await kube.close()
    assert seen == ["Bearer s3cret"]
