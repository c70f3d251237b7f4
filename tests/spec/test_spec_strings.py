"""The pattern of each kind of spec string: what it lets through, and what it refuses with which words."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee.spec import SpecError, SpecIssue, parse_spec

BASE = "cluster: lab\nhosts:\n  - name: a\n    address: {address}\n    ssh: {{user: {user}, key: {key}}}\n"


def spec(address: str = "10.0.0.1", user: str = "deploy", key: str = "/k", extra: str = "") -> str:
    return BASE.format(address=address, user=user, key=key) + extra


def problem(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "cluster.yaml")
    (issue,) = caught.value.issues
    return issue.render("cluster.yaml")


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "fd00::1", "'::1'", "localhost", "gpu-box", "gpu-box.lan.", "a1.example.org", "X-1"]
)
def test_addresses_that_are_names_or_ips(address: str) -> None:
    assert parse_spec(spec(address=address)).hosts[0].address == address.strip("'")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("-oProxyCommand=x", "not a host name or IP address"),
        ("'gpu box'", "not a host name or IP address"),
        ("gpu_box", "not a host name or IP address"),
        ("-box", "not a host name or IP address"),
        ("box-.lan", "not a host name or IP address"),
        ("10.0.0.256", "not a valid IPv4 address"),
        ("'fe80::1%eth0'", "an IPv6 address with a zone"),
        ("root@10.0.0.1", "not a host name or IP address"),
        ("a" * 64, "not a host name or IP address"),
    ],
)
def test_addresses_refused(address: str, why: str) -> None:
    assert f"hosts[0].address: {why}" in problem(spec(address=address))


@pytest.mark.parametrize("user", ["root", "deploy", "_svc", "ci-runner", "a" * 32])
def test_users_that_are_posix_names(user: str) -> None:
    assert parse_spec(spec(user=user)).hosts[0].ssh.user == user


@pytest.mark.parametrize("user", ["Root", "1deploy", "-oX", "a" * 33, "de ploy", "'dé'", "''"])
def test_users_refused(user: str) -> None:
    assert "hosts[0].ssh.user: not a valid user name" in problem(spec(user=user))


@pytest.mark.parametrize("key", ["/k", "~/.ssh/id_ed25519", "/a/b+c@d/e.f_g-h", "keys/id"])
def test_local_paths(key: str, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").touch()  # a relative key must exist next to the spec
    assert parse_spec(spec(key=key), "cluster.yaml", tmp_path).hosts[0].ssh.key == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("'/a b'", "a path of letters, digits and / . _ - + @ only"),
        ("/a:b", "a path of letters, digits and / . _ - + @ only"),
        ("'/a%d'", "a path of letters, digits and / . _ - + @ only"),
        ("~root/.ssh/id", "a path of letters, digits and / . _ - + @ only"),
        ("-i", "a path may not start with '-'"),
        ("/a/../b", "a path may not contain '..'"),
        ("'/a\\b'", "a path of letters, digits and / . _ - + @ only"),
    ],
)
def test_local_paths_refused(key: str, why: str) -> None:
    assert f"hosts[0].ssh.key: {why}" in problem(spec(key=key))


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("opt/rbee", "must be an absolute path"),
        ("~/rbee", "must be an absolute path"),
        ("/opt/rbee/..", "a path may not contain '..'"),
        ("'/opt/r b'", "a path of letters, digits and / . _ - + @ only"),
        ("/opt/ä", "a path of letters, digits and / . _ - + @ only"),
        ("'/opt/" + "x" * 1100 + "'", "a path of at most 1024 characters"),
    ],
)
def test_the_prefix_is_an_absolute_plain_path(prefix: str, why: str) -> None:
    assert f"deploy.prefix: {why}" in problem(spec(extra=f"deploy: {{prefix: {prefix}}}\n"))


def test_the_prefix_may_hold_dots_plus_and_at() -> None:
    assert parse_spec(spec(extra="deploy: {prefix: /opt/rbee-1.2+x@y}\n")).deploy.prefix == "/opt/rbee-1.2+x@y"


@pytest.mark.parametrize(
    "source",
    [
        "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
        "hf:o/r/sub/dir/m.gguf",
        "file:///models/m+1@x.gguf",
        "https://example.org/m.gguf",
        "https://example.org:8443/a/m%20q.gguf?sig=a+b&v=1#frag",
        "https://[fd00::1]/m.gguf",
    ],
)
def test_sources(source: str) -> None:
    text = spec(extra=f"models:\n  - {{id: m, source: '{source}'}}\n")
    assert parse_spec(text).models[0].source == source


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("hf:o/r/../m.gguf", "a Hugging Face source may not contain '.' or '..' parts"),
        ("hf:o/r/m é.gguf", "a Hugging Face source names owner, repository and file"),
        ("file:///models/../m.gguf", "a path may not contain '..'"),
        ("file:///models/m 1.gguf", "a path of letters, digits and / . _ - + @ only"),
        ("https://h/m.gguf?$x", "an https source of URL characters only"),
        ("https://h/m.gguf?a=%zz", "an https source of URL characters only"),
        ("https://h/m\\.gguf", "an https source of URL characters only"),
        ("https://u:p@h/m.gguf", "an https source may not hold credentials"),
        ("https://h:99999/m.gguf", "an https source has a bad port"),
        ("https://-h/m.gguf", "the host of an https source is not a host name or IP address"),
        ("https://h", "an https source needs a host and a path"),
        ("http://h/m.gguf", "unsupported source scheme 'http'"),
    ],
)
def test_sources_refused(source: str, why: str) -> None:
    text = spec(extra=f"models:\n  - {{id: m, source: '{source}'}}\n")
    assert f"models[0].source: {why}" in problem(text)


@pytest.mark.parametrize(("env", "ok"), [("RBEE_API_KEYS", True), ("_K1", True), ("rbee_keys", False),
                                         ("1KEYS", False), ("K-EYS", False), ("K" * 129, False)])  # fmt: skip
def test_api_key_env_names(env: str, ok: bool) -> None:
    text = spec(extra=f"queen: {{api_keys: {{env: {env}}}}}\n")
    if ok:
        assert parse_spec(text).queen.api_keys is not None
    else:
        assert "queen.api_keys.env: not a valid environment variable name" in problem(text)


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("deploy: {service_user: Rbee}\n", "deploy.service_user: not a valid user name"),
        ("deploy: {llama_cpp_python: '0.3.٣'}\n", "deploy.llama_cpp_python: not a version"),
        ("deploy: {builders: ['a b']}\n", "deploy.builders[0]: not a valid name"),
        ("placements: [{model: 'm m'}]\n", "placements[0].model: not a valid model id"),
        ("placements: [{model: m, hosts: [A]}]\n", "placements[0].hosts[0]: not a valid name"),
        ("placements: [{model: m, labels: ['g%']}]\n", "placements[0].labels[0]: not a valid name"),
        ("placements: [{model: m, device: 'cuda:٣'}]\n", "placements[0].device: unknown device"),
    ],
)
def test_every_other_string_has_a_pattern(extra: str, where: str) -> None:
    models = "models: [{id: m, source: 'file:///m.gguf'}]\n"
    found = [i.render("cluster.yaml") for i in _issues(spec(extra=models + extra))]
    assert any(where in f for f in found), found


def _issues(text: str) -> list[SpecIssue]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "cluster.yaml")
    return list(caught.value.issues)


def test_a_long_value_is_shown_cut_and_escaped() -> None:
    line = problem(spec(extra="deploy: {prefix: '/opt/" + "x" * 1100 + "'}\n"))
    assert "(got '/opt/xxx" in line and "...)" in line and len(line) < 400
