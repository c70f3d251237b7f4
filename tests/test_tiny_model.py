"""The tiny random-weight GGUF: deterministic, small, cached atomically, usable by llama.cpp."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from rbee.tiny_model import (
    TINY_MODEL_FILENAME,
    TINY_MODEL_ID,
    ensure_tiny_model,
    is_valid_tiny_model,
    write_tiny_model,
)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = write_tiny_model(tmp_path / "a.gguf")
    b = write_tiny_model(tmp_path / "b.gguf")
    c = write_tiny_model(tmp_path / "c.gguf", seed=1)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.stat().st_size <= 4 * 1024 * 1024
    assert TINY_MODEL_ID == "rbee-tiny"


def test_ensure_writes_once_then_reuses(tmp_path: Path) -> None:
    path = ensure_tiny_model(tmp_path / "cache")
    assert path == tmp_path / "cache" / TINY_MODEL_FILENAME
    assert is_valid_tiny_model(path)
    mtime = path.stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in path.parent.iterdir()] == [TINY_MODEL_FILENAME]  # no temp file left


def test_ensure_rewrites_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / TINY_MODEL_FILENAME
    path.write_bytes(b"GGUF truncated")
    assert not is_valid_tiny_model(path)
    assert ensure_tiny_model(tmp_path) == path
    assert is_valid_tiny_model(path)


@pytest.fixture(scope="module")
def llm(tiny_model_path: Path) -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=256, verbose=False)


@pytest.mark.engine
def test_loads_fast(tiny_model_path: Path) -> None:
    import llama_cpp

    started = time.perf_counter()
    llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=256, verbose=False).close()
    assert time.perf_counter() - started < 1.0


@pytest.mark.engine
def test_any_text_tokenizes_and_round_trips(llm: Any) -> None:
    text = "Hello, queen bee! Ünïcødé ✓ 蜂\ttabs\nnewlines"
    tokens = llm.tokenize(text.encode())
    assert tokens[0] == llm.token_bos()
    assert llm.detokenize(tokens).decode() == text


@pytest.mark.engine
def test_generates_max_tokens_of_text(llm: Any) -> None:
    out = llm.create_completion("The hive", max_tokens=32, seed=1)
    assert out["usage"]["completion_tokens"] == 32
    assert out["choices"][0]["finish_reason"] == "length"
    assert len(out["choices"][0]["text"].split()) >= 16


@pytest.mark.engine
def test_chat_template_works(llm: Any) -> None:
    out = llm.create_chat_completion(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=8,
        seed=1,
    )
    assert out["choices"][0]["message"]["content"].strip()
    assert out["usage"]["completion_tokens"] == 8
