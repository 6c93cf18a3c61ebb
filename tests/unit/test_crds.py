"""The CRDs generated from the models: structural schema, rules, columns, and what is checked in."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmop.cli import main
from llmop.manifests.runtime_pods import runtime_pod
from llmop.models.backend import AGENT_RUNTIMES, LLMBackendSpec
from llmop.models.crd import all_crds, llmbackend_crd, modelpull_crd
from llmop.models.duration import DURATION_PATTERN

REPO = Path(__file__).resolve().parents[2]


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
    return found


def _rules(crd: dict[str, Any]) -> dict[str, list[str]]:
    return {
        path: [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]
        for path, node in _walk(_schema(crd))
        if node.get("x-kubernetes-validations")
    }


@pytest.mark.parametrize("crd", [llmbackend_crd(), modelpull_crd()], ids=["llmbackend", "modelpull"])
def test_every_field_has_a_description_and_no_default(crd: dict[str, Any]) -> None:
    for path, node in _walk(_schema(crd)):
        if path.startswith((".metadata", ".apiVersion", ".kind")) or path == "":
            continue
        if path.endswith("[]") and node.get("type") in ("string", "integer"):
            continue  # kubectl explain describes a list of scalars by the list's own description
        assert node.get("description"), f"{path} has no description (kubectl explain would show nothing)"
        assert "default" not in node, f"{path} has a schema default: the API server would rewrite spec"
        assert "anyOf" not in node and "$ref" not in node, f"{path} is not structural"


def test_llmbackend_names_status_and_columns() -> None:
    crd = llmbackend_crd()
    assert crd["spec"]["names"]["shortNames"] == ["llmb"]
    assert crd["spec"]["names"]["categories"] == ["llmop"]
    version = crd["spec"]["versions"][0]
    # kubectl scale, an HPA and KEDA write spec.replicas through /scale; the paths exist in the schema.
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas.ready",
            "labelSelectorPath": ".status.selector",
        },
    }
    properties = version["schema"]["openAPIV3Schema"]["properties"]
    assert properties["spec"]["properties"]["replicas"]["type"] == "integer"
    assert properties["status"]["properties"]["replicas"]["properties"]["ready"]["type"] == "integer"
    assert properties["status"]["properties"]["selector"]["type"] == "string"
    assert [c["name"] for c in version["additionalPrinterColumns"]][:5] == [
        "Runtime",
        "Phase",
        "Ready",
        "Models",
        "Endpoint",
    ]
    assert version["additionalPrinterColumns"][-1]["name"] == "Age"


def test_modelpull_names_and_columns() -> None:
    crd = modelpull_crd()
    assert crd["spec"]["names"]["shortNames"] == ["mpull"]
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Backend", "Model", "Phase", "Progress"] and columns[-1] == "Age"


def test_llmbackend_cel_rules_cover_what_the_api_server_can_reject() -> None:
    rules = _rules(llmbackend_crd())
    assert rules[".spec"][0] == "has(self.runtime) != has(self.external)"
    assert "self.port != 8090" in rules[".spec"][1]
    assert rules[".spec.replicas"] == ["self >= 0"]
    # A change of replicas on an external backend only: one stored before the rule stays writable.
    assert any("has(self.external)" in rule and "oldSelf.replicas" in rule for rule in rules[".spec"])
    assert rules[".spec.gpu.count"] == ["self >= 0"]
    assert "isURL(self)" in rules[".spec.external.url"][0]
    assert rules[".spec.models[].name"][0] == "self.trim().size() > 0"
    assert "getPort()" in rules[".spec.models[].name"][1]
    assert "getPort()" in rules[".spec.external.url"][-1]
    assert rules[".spec.startup.timeout"] == [f"self.matches('{DURATION_PATTERN}')"]
    warmup = rules[".spec.warmup.timeout"]
    assert warmup[0] == f"self.matches('{DURATION_PATTERN}')"
    assert "duration(self) >= duration('1s')" in warmup[1] and "duration('10m')" in warmup[1]
    probe = rules[".spec.startup.probeInterval"]
    assert probe[0] == f"self.matches('{DURATION_PATTERN}')"
    assert "duration(self) >= duration('100ms')" in probe[1] and "duration('10m')" in probe[1]


def test_the_agent_port_rule_names_every_runtime_whose_pods_have_an_agent() -> None:
    with_agent = {name for name in ("ollama", "vllm", "llamacpp") if runtime_pod(_managed(name)).needs_agent}
    assert set(AGENT_RUNTIMES) == with_agent


@pytest.mark.parametrize(
    ("field", "allowed"),
    [
        (
            "podSecurityContext",
            {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"},
        ),
        (
            "securityContext",
            {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "seccompProfile"},
        ),
    ],
)
def test_security_contexts_hold_only_fields_that_grant_no_privilege(field: str, allowed: set[str]) -> None:
    """No field is kept that the schema does not name: the API server refuses (kubectl's Strict
    field validation) or prunes `privileged`, `capabilities` and the like."""
    node = _schema(llmbackend_crd())["properties"]["spec"]["properties"][field]
    assert set(node["properties"]) == allowed
    for path, inner in _walk(node):
        assert not inner.get("x-kubernetes-preserve-unknown-fields"), f"{field}{path} keeps unknown fields"
    assert node["properties"]["seccompProfile"]["properties"]["type"]["enum"] == [
        "RuntimeDefault",
        "Localhost",
    ]


def test_modelpull_cel_rules() -> None:
    rules = _rules(modelpull_crd())
    assert rules[".spec.backendRef.name"] == ["self.size() > 0"]
    assert rules[".spec.model"][0] == "self.trim().size() > 0"
    assert rules[".spec.retry.maxAttempts"] == ["self >= 1 && self <= 100"]
    backoff = rules[".spec.retry.backoff"]
    assert backoff[0] == f"self.matches('{DURATION_PATTERN}')"
    assert "duration(self) >= duration('1s')" in backoff[1] and "duration('10m')" in backoff[1]


def test_duration_rule_is_valid_cel_and_matches_like_the_parser() -> None:
    # CEL string literals take no backslash escapes like `\.`; the pattern must avoid them.
    assert "\\" not in DURATION_PATTERN
    assert re.fullmatch(DURATION_PATTERN, "1h30m") and not re.fullmatch(DURATION_PATTERN, "90")


def test_conditions_merge_by_type() -> None:
    conditions = _schema(llmbackend_crd())["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_checked_in_crds_match_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--dir", str(REPO / "crds")]) == 0


def test_check_fails_when_a_crd_file_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--write", "--dir", str(tmp_path)]) == 0
    stale = tmp_path / "llmop.dev_modelpulls.yaml"
    stale.write_text(stale.read_text().replace("mpull", "mp"))
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 1
    assert "llmop.dev_modelpulls.yaml" in capsys.readouterr().err


def _examples() -> list[Path]:
    return sorted((REPO / "examples").glob("*.yaml"))


def test_there_is_an_example_per_runtime_external_and_pull() -> None:
    kinds = [doc for path in _examples() for doc in yaml.safe_load_all(path.read_text())]
    runtimes = {doc["spec"].get("runtime") for doc in kinds if doc["kind"] == "LLMBackend"}
    assert {"ollama", "vllm", "llamacpp"} <= runtimes
    assert any("external" in doc["spec"] for doc in kinds if doc["kind"] == "LLMBackend")
    assert any(doc["kind"] == "ModelPull" for doc in kinds)
    assert any(doc["kind"] == "ModelCache" for doc in kinds)
    assert any("modelCache" in doc["spec"] for doc in kinds if doc["kind"] == "LLMBackend")


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_examples_validate_against_the_generated_schema(path: Path) -> None:
    crds = {crd["spec"]["names"]["kind"]: crd for crd in all_crds().values()}
    for document in yaml.safe_load_all(path.read_text()):
        crd = crds[document["kind"]]
        assert document["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
        jsonschema.validate(document, _schema(crd))
        for rule_path, rules in _rules(crd).items():
            for rule in rules:
                if rule.startswith("self.matches("):
                    value = _lookup(document, rule_path)
                    if value is not None:
                        assert re.fullmatch(DURATION_PATTERN, value), f"{path.name}{rule_path}={value}"


def test_schema_rejects_a_wrong_type_with_the_field_named() -> None:
    bad = {
        "apiVersion": "llmop.dev/v1alpha1",
        "kind": "LLMBackend",
        "spec": {"runtime": "ollama", "replicas": "two"},
    }
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        jsonschema.validate(bad, _schema(llmbackend_crd()))


def _managed(runtime: str) -> LLMBackendSpec:
    return LLMBackendSpec.model_validate({"runtime": runtime})


def _lookup(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.strip(".").split("."):
        if part.endswith("[]") or not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
