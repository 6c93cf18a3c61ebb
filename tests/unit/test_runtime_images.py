"""The runtime images llmop deploys by default: exact releases, the ones the tests run, and the
same in the code, the chart and the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llmop.config import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[2]


def pinned_versions() -> dict[str, str]:
    lines = (REPO / "hack" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_each_default_image_is_the_release_the_tests_run() -> None:
    versions = pinned_versions()
    assert DEFAULT_IMAGES == {
        "ollama": f"docker.io/ollama/ollama:{versions['OLLAMA_VERSION'].removeprefix('v')}",
        "vllm": f"docker.io/vllm/vllm-openai:v{versions['VLLM_VERSION']}",
        "llamacpp": f"ghcr.io/ggml-org/llama.cpp:server-{versions['LLAMA_CPP_BUILD']}",
    }


@pytest.mark.parametrize("runtime", sorted(DEFAULT_IMAGES))
def test_no_default_image_is_a_moving_tag(runtime: str) -> None:
    image = DEFAULT_IMAGES[runtime]
    name, _, tag = image.rpartition(":")
    assert "@sha256:" in image or (name and re.search(r"\d", tag) and tag != "latest"), image


def test_the_chart_and_the_docs_default_to_the_same_images() -> None:
    values = yaml.safe_load((REPO / "charts" / "llmop" / "values.yaml").read_text())
    assert values["runtimeImages"] == DEFAULT_IMAGES
    configuration = (REPO / "docs" / "configuration.md").read_text()
    for runtime, image in DEFAULT_IMAGES.items():
        assert f'`runtimeImages.{runtime}` | string | `"{image}"`' in configuration
