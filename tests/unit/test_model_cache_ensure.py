"""A ModelCache's objects are applied only when every name is free and every object of the
namespace it names has opted in; the filler keeps its image across operator upgrades."""

from __future__ import annotations

from typing import Any

import pytest

from llmop.config import OperatorConfig
from llmop.k8s.client import DEPLOYMENTS, PVCS, SECRETS
from llmop.loops.context import OperatorContext
from llmop.loops.model_cache import CacheNotApplied, apply_cache_objects
from llmop.models.cache import ModelCacheSpec
from support.fake_kube import FakeKube

CONFIG = OperatorConfig()
MODEL = "hf://org/repo"


def context_of(kube: FakeKube, config: OperatorConfig = CONFIG) -> OperatorContext:
    context = OperatorContext(config=config)
    context.kube = kube  # type: ignore[assignment]
    return context


def spec(**fields: Any) -> ModelCacheSpec:
    return ModelCacheSpec.model_validate({"storage": {"size": "10Gi"}, "models": [{"name": MODEL}], **fields})


def secret(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"token": "aGY="}}


async def test_the_claim_token_and_filler_are_written_once_the_names_are_free() -> None:
    kube = FakeKube()
    await apply_cache_objects(context_of(kube), "shared", "team", "uid-c", spec())
    assert kube.applied == [
        ("secrets", "shared-filler-token"),
        ("persistentvolumeclaims", "shared-model-cache"),
        ("deployments", "shared-filler"),
    ]


@pytest.mark.parametrize(
    ("existing", "fields", "reason"),
    [
        ((SECRETS, secret("hf")), {"hfTokenSecretRef": {"name": "hf", "key": "token"}}, "SecretNotOptedIn"),
        (None, {"hfTokenSecretRef": {"name": "hf", "key": "token"}}, "SecretNotFound"),
        (
            (PVCS, {"metadata": {"name": "nfs", "labels": {}}}),
            {"storage": {"existingClaim": "nfs"}},
            "PersistentVolumeClaimNotOptedIn",
        ),
        ((DEPLOYMENTS, {"metadata": {"name": "shared-filler"}}), {}, "NameConflict"),
    ],
)
async def test_nothing_is_written_for_an_object_that_did_not_opt_in_or_a_taken_name(
    existing: Any, fields: dict[str, Any], reason: str
) -> None:
    kube = FakeKube(*([existing] if existing else []))
    with pytest.raises(CacheNotApplied) as refused:
        await apply_cache_objects(context_of(kube), "shared", "team", "uid-c", spec(**fields))
    assert refused.value.reason == reason
    assert not [kind for kind, _ in kube.applied if kind != "secrets"], "no claim or filler written"


async def test_an_opted_in_token_secret_is_used_and_an_upgrade_keeps_the_filler_image() -> None:
    kube = FakeKube((SECRETS, secret("hf", {"llmop.dev/use": "true"})))
    fields = {"hfTokenSecretRef": {"name": "hf", "key": "token"}}
    old = CONFIG.model_copy(update={"agent_image": "llmop:0.1"})
    await apply_cache_objects(context_of(kube, old), "shared", "team", "uid-c", spec(**fields))
    await apply_cache_objects(context_of(kube), "shared", "team", "uid-c", spec(**fields))
    filler = kube.objects[("deployments", "shared-filler")]
    assert filler["spec"]["template"]["spec"]["containers"][0]["image"] == "llmop:0.1"
