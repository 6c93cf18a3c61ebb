"""hack/tiny-gguf: the test model every real runtime loads must be valid and reproducible."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import gguf

TINY_GGUF = Path(__file__).resolve().parents[2] / "hack" / "tiny-gguf"


def write(out: Path, *args: str) -> bytes:
    subprocess.run([sys.executable, str(TINY_GGUF), str(out), *args], check=True, timeout=120)
    return out.read_bytes()


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    first = write(tmp_path / "a.gguf")
    second = write(tmp_path / "b.gguf")
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert write(tmp_path / "c.gguf", "--name", "other") != first


def test_it_is_the_llama_model_the_runtimes_expect(tmp_path: Path) -> None:
    out = tmp_path / "tiny.gguf"
    write(out, "--context-length", "4096")
    reader = gguf.GGUFReader(str(out))

    def field(key: str) -> object:
        value = reader.get_field(key)
        assert value is not None, key
        return value.contents()

    assert field("general.architecture") == "llama"
    assert field("general.name") == "tiny-llama"
    assert field("llama.context_length") == 4096
    assert field("llama.embedding_length") == 64
    assert field("llama.block_count") == 2
    assert field("tokenizer.ggml.model") == "llama"
    tokens = field("tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert len(tokens) == 512
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert tokens[258] == "<0xFF>"
    assert len(set(tokens)) == 512
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}
    assert out.stat().st_size < 1_000_000
