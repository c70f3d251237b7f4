"""``rbee.deploys.stream``: the OpenSSH command of a host is pyinfra's settings for it, and a failed stream names both.

The hosts are pyinfra's own objects, made from a spec by the inventory adapter (``rbee.spec.inventory``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.host import Host

from rbee.deploys.stream import StreamUpload, Upload, ssh_command
from rbee.spec import load_spec
from rbee.spec.inventory import inventory_groups

SPEC = """
version: 1
cluster: streamtest
queen: {host: a}
hosts:
  - {name: a, address: 10.9.0.1, ssh: {user: root, port: 2222, key: keys/a, known_hosts_file: /etc/rbee/known}}
  - {name: b, address: 10.9.0.2, ssh: {user: deploy}}
"""

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client is not installed")


def hosts(tmp_path: Path, extra: dict[str, object] | None = None) -> dict[str, Host]:
    """The spec's hosts as pyinfra builds them from ``inventory/inventory.py``'s groups."""
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC)
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys/a").write_text("a key\n")
    groups = inventory_groups(load_spec(spec_file), spec_file)
    entries = [(name, {**data, **(extra or {})}) for name, data in groups["hives"]]
    inventory = Inventory((entries, {}))
    State(inventory, Config())
    return {name: inventory.get_host(name) for name in ("a", "b")}


def test_the_command_is_pyinfras_settings_for_the_host_with_host_keys_checked(tmp_path: Path) -> None:
    made = hosts(tmp_path)
    assert ssh_command(made["a"]) == [
        "ssh", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-o", "ConnectTimeout=10", "-o", "UserKnownHostsFile=/etc/rbee/known", "-o", "StrictHostKeyChecking=accept-new",
        "-p", "2222", "-l", "root", "-i", str(tmp_path / "keys/a"), "-o", "IdentitiesOnly=yes", "--", "10.9.0.1",
    ]  # fmt: skip
    b = ssh_command(made["b"])
    assert b is not None and b[-2:] == ["--", "10.9.0.2"] and b[b.index("-l") : b.index("-l") + 2] == ["-l", "deploy"]
    assert not any("StrictHostKeyChecking=no" in word or "/dev/null" in word for word in b)


@pytest.mark.parametrize(
    "extra", [{"ssh_password": "x"}, {"ssh_key_password": "x"}, {"_sudo_password": "x"}, {"_su_user": "rbee"}]
)
def test_a_host_that_needs_a_prompt_answered_uploads_through_pyinfra(tmp_path: Path, extra: dict[str, object]) -> None:
    assert ssh_command(hosts(tmp_path, extra)["a"]) is None


def test_a_local_host_uploads_through_pyinfra() -> None:
    inventory = Inventory((["@local"], {}))
    State(inventory, Config())
    assert ssh_command(inventory.get_host("@local")) is None


def test_a_stream_that_cannot_connect_fails_the_host_naming_the_host_and_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Port 1 of this machine refuses the connection: ssh says so, and the host fails with the copy named."""
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" * 1000)
    spec_host = hosts(tmp_path, {"ssh_hostname": "127.0.0.1", "ssh_port": 1})["a"]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    command = StreamUpload(Upload(str(src), "/opt/rbee/models/.m.gguf.rbee-tmp-1", "/opt/rbee/models/m.gguf", sha))
    with caplog.at_level(logging.ERROR, logger="pyinfra"):
        assert command.execute(spec_host.state, spec_host, {}) is False
    said = caplog.text
    assert f"rbee: copy of {src} to a:/opt/rbee/models/m.gguf failed: " in said
    assert "Connection refused" in said and "(ssh exit 255)" in said
