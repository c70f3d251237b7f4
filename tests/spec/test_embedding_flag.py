"""``models[].embedding``: an embedding model, carried into the hive config its workers start from."""

from __future__ import annotations

import pytest

from rbee.spec import SpecError, parse_spec

SPEC = """\
cluster: lab
hosts:
  - name: a
    address: 10.0.0.1
models:
  - id: tiny
    source: file:///models/tiny.gguf
  - id: embed
    source: file:///models/embed.gguf
    embedding: {flag}
"""


def test_embedding_defaults_to_false_and_is_read() -> None:
    spec = parse_spec(SPEC.format(flag="true"))
    assert [(m.id, m.embedding) for m in spec.models] == [("tiny", False), ("embed", True)]


def test_embedding_must_be_a_boolean() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.format(flag="sometimes"))
    (issue,) = caught.value.issues
    assert "models[1].embedding" in issue.render("cluster.yaml")
