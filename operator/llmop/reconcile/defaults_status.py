"""status.images and condition DefaultsCurrent: the defaults a backend's pods were built with, and
whether llmop's own are newer (llmop.manifests.resolved_defaults, docs/upgrades.md)."""

from __future__ import annotations

from llmop.models.backend import BackendImages, LLMBackendStatus
from llmop.models.base import Condition
from llmop.reconcile.conditions import condition, find

DEFAULTS_CONDITION = "DefaultsCurrent"
#: Each default by the name the ensure path gives it, in words.
DEFAULT_NAMES = {"runtime": "runtime image", "agent": "agent image", "hfEndpoint": "Hugging Face endpoint"}
ADOPT_HINT = (
    "the pods move to them with the next change of spec, or now with a new value of the backend's "
    "annotation upgrade.llmop.dev/adopt-defaults"
)

#: (the defaults the pods were built with, llmop's current ones), each by name.
Defaults = tuple[dict[str, str], dict[str, str]]


def defaults_status(
    defaults: Defaults | None, previous: LLMBackendStatus, generation: int
) -> tuple[BackendImages | None, list[Condition]]:
    """status.images and the DefaultsCurrent condition. Until the ensure path has resolved the
    backend's defaults (just after the operator started) the previous status holds."""
    if defaults is None:
        kept = find(previous.conditions, DEFAULTS_CONDITION)
        return previous.images, [kept] if kept else []
    running, current = defaults
    images = BackendImages(runtime=running.get("runtime"), agent=running.get("agent"))
    newer = [name for name in DEFAULT_NAMES if running.get(name) != current.get(name)]
    if not newer:
        message = "the pods run llmop's current defaults"
        return images, [condition(DEFAULTS_CONDITION, True, "CurrentDefaults", message, generation)]
    changes = "; ".join(
        f"{DEFAULT_NAMES[name]} {_shown(name, running)}, now {_shown(name, current)}" for name in newer
    )
    message = f"llmop's defaults are newer than the pods': {changes}; {ADOPT_HINT}"
    return images, [condition(DEFAULTS_CONDITION, False, "NewerDefaults", message, generation)]


def _shown(name: str, defaults: dict[str, str]) -> str:
    if name in defaults:
        return defaults[name]
    return "https://huggingface.co" if name == "hfEndpoint" else "(none)"
