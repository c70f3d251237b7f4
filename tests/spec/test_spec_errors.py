"""One test per class of spec error: each names the file, the line, the field and a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rbee.spec import SpecError, load_spec, parse_spec

VALID = """\
cluster: lab
hosts:
  - name: a
    address: 10.0.0.1
    labels: [gpu]
  - name: b
    address: 10.0.0.2
models:
  - id: tiny
    source: file:///models/tiny.gguf
placements:
  - model: tiny
    hosts: [a]
"""


def problems(text: str, tmp_path: Path | None = None) -> list[str]:
    """The rendered problems of a spec text (which must be invalid)."""
    with pytest.raises(SpecError) as caught:
        parse_spec(textwrap.dedent(text), "cluster.yaml", tmp_path)
    return [issue.render("cluster.yaml") for issue in caught.value.issues]


def only(text: str, tmp_path: Path | None = None) -> str:
    found = problems(text, tmp_path)
    assert len(found) == 1, found
    return found[0]


def test_the_valid_base_spec_is_accepted() -> None:
    spec = parse_spec(VALID)
    assert [h.name for h in spec.hosts] == ["a", "b"]
    assert spec.queen_host.name == "a"


def test_minimal_spec_is_three_lines() -> None:
    spec = parse_spec("cluster: home\nhosts:\n  - {name: box, address: localhost}\n")
    assert spec.hosts[0].is_local and spec.queen.port == 7833 and spec.hosts[0].hive.port == 7835


def test_unknown_key_suggests_the_right_one() -> None:
    line = only(VALID.replace("    address: 10.0.0.2", "    adress: 10.0.0.2"))
    assert line.startswith("cluster.yaml:7:5: hosts[1].adress: unknown key 'adress'")
    assert "did you mean 'address'?" in line


def test_unknown_key_one_level_too_high_points_below() -> None:
    line = problems(VALID.replace("    address: 10.0.0.2", "    address: 10.0.0.2\n    port: 22"))[0]
    assert "hosts[1].port: unknown key 'port'" in line and "did you mean ssh.port?" in line


def test_wrong_type_names_field_line_and_value() -> None:
    line = only(VALID.replace("  - model: tiny\n", "  - model: tiny\n    replicas: many\n"))
    assert line.startswith("cluster.yaml:13:15: placements[0].replicas:") and "(got 'many')" in line


def test_out_of_range_port() -> None:
    line = only(VALID.replace("    address: 10.0.0.1\n", "    address: 10.0.0.1\n    hive: {port: 70000}\n"))
    assert line.startswith("cluster.yaml:5:18: hosts[0].hive.port:") and "(got 70000)" in line
    assert "between 1 and 65535" in line


def test_duplicate_host_names() -> None:
    line = only(VALID.replace("name: b", "name: a"))
    assert line.startswith("cluster.yaml:6:11: hosts[1].name: duplicate host name") and "(got 'a')" in line


@pytest.mark.parametrize("name", ["queen", "hives", "all", "ungrouped"])
def test_a_host_named_like_an_inventory_group_is_refused(name: str) -> None:
    line = only(VALID.replace("name: b", f"name: {name}").replace("hosts: [b]", f"hosts: [{name}]"))
    assert line.startswith("cluster.yaml:6:11: hosts[1].name: reserved") and f"(got '{name}')" in line
    assert "--limit would select the group" in line


def test_two_services_on_one_host_port() -> None:
    text = VALID.replace("cluster: lab\n", "cluster: lab\nqueen: {host: a, port: 7835}\n")
    line = only(text)
    assert "hosts[0].hive.port: 10.0.0.1:7835 is already used by the queen" in line
    assert line.startswith("cluster.yaml:")


def test_queen_host_not_in_hosts() -> None:
    line = only(VALID.replace("cluster: lab\n", "cluster: lab\nqueen: {host: c}\n"))
    assert line.startswith("cluster.yaml:2:15: queen.host: the queen must run on one of the hosts (got 'c')")


def test_placement_naming_unknown_model_host_and_label() -> None:
    text = VALID.replace("  - model: tiny\n    hosts: [a]\n", "  - model: tiny2\n    hosts: [z]\n    labels: [gpuu]\n")
    found = problems(text)
    assert any("placements[0].model: unknown model (got 'tiny2'); did you mean 'tiny'?" in f for f in found)
    assert any(f.startswith("cluster.yaml:13:13: placements[0].hosts[0]: unknown host (got 'z')") for f in found)
    assert any(
        "placements[0].labels[0]: no host carries this label (got 'gpuu'); did you mean 'gpu'?" in f for f in found
    )


def test_more_replicas_than_eligible_hosts() -> None:
    line = only(VALID.replace("    hosts: [a]\n", "    labels: [gpu]\n    replicas: 2\n"))
    assert "placements[0].replicas: more replicas than eligible hosts: 1 host(s)" in line
    assert "lower replicas to 1" in line


def test_device_restricts_eligible_hosts() -> None:
    text = VALID.replace("    hosts: [a]\n", "    device: cuda:0\n")
    text = text.replace("    labels: [gpu]\n", "    labels: [gpu]\n    backend: cpu\n")
    line = only(
        text.replace("  - name: b\n    address: 10.0.0.2\n", "  - name: b\n    address: 10.0.0.2\n    backend: cpu\n")
    )
    assert "placements[0].replicas: more replicas than eligible hosts: 0 host(s)" in line and "device cuda:0" in line


def test_malformed_sha256() -> None:
    line = only(
        VALID.replace(
            "    source: file:///models/tiny.gguf\n", "    source: file:///models/tiny.gguf\n    sha256: xyz\n"
        )
    )
    assert line.startswith("cluster.yaml:11:13: models[0].sha256: a sha256 is 64 hexadecimal characters (got 'xyz')")


@pytest.mark.parametrize("source", ["ftp://host/m.gguf", "s3://bucket/m.gguf", "models/m.gguf"])
def test_unsupported_source_scheme(source: str) -> None:
    line = only(VALID.replace("file:///models/tiny.gguf", source))
    assert line.startswith("cluster.yaml:10:13: models[0].source: ")
    assert "unsupported source scheme" in line or "source has no scheme" in line
    assert "hf:OWNER/REPO/FILE.gguf" in line


def test_hf_source_must_name_a_file() -> None:
    line = only(VALID.replace("file:///models/tiny.gguf", "hf:TheBloke/TinyLlama"))
    assert "models[0].source: a Hugging Face source names owner, repository and file" in line


def test_relative_key_path_that_does_not_exist(tmp_path: Path) -> None:
    text = VALID.replace("    address: 10.0.0.2\n", "    address: 10.0.0.2\n    ssh: {key: keys/id}\n")
    line = only(text, tmp_path)
    assert line.startswith("cluster.yaml:8:16: hosts[1].ssh.key: key file not found")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("k")
    parse_spec(text, "cluster.yaml", tmp_path)


def test_inline_api_keys_are_refused() -> None:
    line = only(VALID.replace("cluster: lab\n", "cluster: lab\nqueen:\n  api_keys: sk-secret\n"))
    assert line.startswith("cluster.yaml:3:13: queen.api_keys: API keys may not be written in the spec")
    assert "{env: RBEE_API_KEYS}" in line


def test_api_keys_need_exactly_one_source() -> None:
    line = only(VALID.replace("cluster: lab\n", "cluster: lab\nqueen:\n  api_keys: {env: K, file: /k}\n"))
    assert "queen.api_keys: give exactly one of env or file" in line


def test_yaml_syntax_error_has_the_line() -> None:
    line = only("cluster: lab\nhosts:\n  - name: a\n   address: [unclosed\n")
    assert line.startswith("cluster.yaml:4:") and "YAML syntax error" in line


def test_empty_file() -> None:
    assert only("") == "cluster.yaml:1:1: (root): the spec is empty; start from inventory/cluster.example.yaml"
    assert "the spec is empty" in only("# only a comment\n")


def test_not_a_mapping() -> None:
    assert "(root): the spec must be a mapping" in only("- a\n- b\n")


def test_missing_required_key_points_at_its_parent() -> None:
    line = only(VALID.replace("    address: 10.0.0.2\n", ""))
    assert line.startswith("cluster.yaml:6:5: hosts[1].address: required key 'address' is missing")


def test_bad_enum_suggests_the_closest() -> None:
    line = only(VALID.replace("    labels: [gpu]\n", "    labels: [gpu]\n    backend: cudaa\n"))
    assert "hosts[0].backend: must be one of auto, cpu, cuda, metal (got 'cudaa'); did you mean 'cuda'?" in line


def test_duplicate_yaml_key() -> None:
    line = only(VALID.replace("cluster: lab\n", "cluster: lab\ncluster: lab2\n"))
    assert line.startswith("cluster.yaml:2:1: cluster: duplicate key")


def test_bad_duration_and_stale_rule() -> None:
    found = problems(VALID + "runtime:\n  heartbeat_interval: soon\n")
    assert any("runtime.heartbeat_interval: expected a duration (got 'soon')" in f for f in found)
    line = only(VALID + "runtime:\n  heartbeat_interval: 10s\n  stale_timeout: 15s\n")
    assert line.startswith("cluster.yaml:16:18: runtime.stale_timeout: stale_timeout must be at least twice")


def test_every_problem_is_reported_in_one_run() -> None:
    text = VALID.replace("address: 10.0.0.1", "address: 10.0.0.1\n    hive: {port: 0}")
    text = text.replace("name: b", "name: a").replace("hosts: [a]", "hosts: [q]")
    text = text.replace("file:///models/tiny.gguf", "ftp://x/y.gguf")
    found = problems(text)
    fields = {f.split(": ")[1] for f in found}
    assert {"hosts[0].hive.port", "hosts[1].name", "models[0].source", "placements[0].hosts[0]"} <= fields
    lines = [int(f.split(":")[1]) for f in found]
    assert lines == sorted(lines)


def test_example_spec_is_valid() -> None:
    spec = load_spec(Path(__file__).parents[2] / "inventory" / "cluster.example.yaml")
    assert spec.cluster == "homelab"
