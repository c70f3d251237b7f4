"""A spec cannot run code: hostile strings are refused by the real CLI, with the field and the line.

Template syntax, SSH options, newlines, control characters and ``..`` paths in every string field;
an alias bomb, deep nesting, huge and non-UTF-8 files. Nothing of them reaches an Ansible inventory
or a rendered file; a value forced past the spec (the emitters called directly) is still not
templated by Ansible and still cannot add a line to a unit. (The example GitOps workflow, which runs only the base
branch's code next to its secrets: ``tests/gitops``.)
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from rbee.cli import exits
from rbee.cli.main import app
from rbee.deploy.ansible_inventory import ansible_inventory, connection_vars, inventory_yaml
from rbee.deploy.ansible_steps import ssh_remote
from rbee.deploy.host_plan import plan_deployed_host
from rbee.deploy.probe import parse_probe
from rbee.deploy.ssh_check import SshTarget
from rbee.render import RenderError, render
from rbee.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
RBEE = BIN / "rbee"
ANSIBLE = BIN / "ansible"
PROBE = "os=Linux\narch=x86_64\npython=3.11.2\npython_venv=yes\nram_total_kb=8000000\nsystemd=yes\nprobe=done\n"

BASE: dict[str, Any] = {
    "cluster": "lab",
    "queen": {"host": "a", "api_keys": {"env": "RBEE_API_KEYS"}},
    "hosts": [
        {
            "name": "a",
            "address": "10.0.0.1",
            "labels": ["gpu"],
            "backend": "cpu",
            "gpus": "all",
            "ssh": {"user": "deploy", "key": "/keys/id", "known_hosts_file": "/etc/rbee/known_hosts"},
            "reserve": {"ram": "1GiB"},
        }
    ],
    "models": [{"id": "m", "source": "file:///models/m.gguf", "sha256": "ab" * 32}],
    "placements": [{"model": "m", "hosts": ["a"], "labels": ["gpu"], "device": "cpu"}],
    "runtime": {"heartbeat_interval": "5s"},
    "deploy": {
        "prefix": "/opt/rbee",
        "service_user": "rbee",
        "llama_cpp_python": "0.3.36",
        "build_cache": "~/.cache/rbee/wheels",
        "model_cache": "~/.cache/rbee/models",
        "builders": ["a"],
        "on_unreachable": "continue",
    },
}
STRING_FIELDS: list[tuple[str | int, ...]] = [
    ("cluster",), ("queen", "host"), ("queen", "api_keys", "env"),
    ("hosts", 0, "name"), ("hosts", 0, "address"), ("hosts", 0, "labels", 0), ("hosts", 0, "backend"),
    ("hosts", 0, "gpus"), ("hosts", 0, "ssh", "user"), ("hosts", 0, "ssh", "key"),
    ("hosts", 0, "ssh", "known_hosts_file"), ("hosts", 0, "reserve", "ram"),
    ("models", 0, "id"), ("models", 0, "source"), ("models", 0, "sha256"),
    ("placements", 0, "model"), ("placements", 0, "hosts", 0), ("placements", 0, "labels", 0),
    ("placements", 0, "device"), ("runtime", "heartbeat_interval"),
    ("deploy", "prefix"), ("deploy", "service_user"), ("deploy", "llama_cpp_python"), ("deploy", "build_cache"),
    ("deploy", "model_cache"), ("deploy", "builders", 0), ("deploy", "on_unreachable"),
]  # fmt: skip
"""Every string the spec holds (``queen.api_keys.file`` is checked apart: it excludes ``env``)."""
PATH_FIELDS = [("hosts", 0, "ssh", "key"), ("hosts", 0, "ssh", "known_hosts_file"), ("deploy", "prefix"),
               ("deploy", "build_cache"), ("deploy", "model_cache")]  # fmt: skip

PWNED = "/tmp/rbee-pwned"
TEMPLATES = {"jinja", "jinja-block", "jinja-comment", "shell-var", "shell-command", "backticks"}
HOSTILE = {
    "jinja": f"{{{{ lookup('pipe', 'touch {PWNED}') }}}}",
    "jinja-block": "{% for x in range(9) %}x{% endfor %}",
    "jinja-comment": "{# x #}",
    "shell-var": "${HOME}",
    "shell-command": f"$(touch {PWNED})",
    "backticks": f"`touch {PWNED}`",
    "ssh-option": f"-oProxyCommand=touch {PWNED}",
    "newline": "x\nExecStartPre=/bin/sh -c id",
    "nul": "x\x00y",
    "tab": "x\ty",
    "del": "x\x7fy",
    "escape": "x\x1b[2Jy",
    "line-separator": "x\u2028y",
    "bidi-override": "x\u202ey",
}


def _path(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def _with(values: dict[tuple[str | int, ...], str], base: dict[str, Any] = BASE) -> str:
    spec = copy.deepcopy(base)
    for path, value in values.items():
        node: Any = spec
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return yaml.safe_dump(spec, sort_keys=False, default_flow_style=False, allow_unicode=False)


def _validate(file: Path) -> subprocess.CompletedProcess[str]:
    """``rbee spec validate FILE``, the installed command."""
    return subprocess.run([str(RBEE), "spec", "validate", str(file)], capture_output=True, text=True, timeout=60)


def _validate_here(file: Path) -> tuple[int, str]:
    """The same command run in this process (the same code, without a second of start-up per case)."""
    result = CliRunner().invoke(app, ["spec", "validate", str(file)])
    return result.exit_code, result.output


def _reported(output: str, file: Path, path: tuple[str | int, ...], text: str) -> str:
    """The problem reported for ``path``, checked to sit on the line of that field in the file."""
    found = re.search(rf"^{re.escape(str(file))}:(\d+):\d+: {re.escape(_path(path))}: (.*)$", output, re.M)
    assert found, f"{_path(path)} not reported:\n{output}"
    line = text.splitlines()[int(found.group(1)) - 1]
    last = path[-1]
    assert (f"{last}:" in line) if isinstance(last, str) else line.lstrip().startswith("- "), (line, found.group(0))
    return found.group(2)


def test_the_base_spec_is_valid() -> None:
    spec = parse_spec(_with({}), "cluster.yaml")
    assert spec.hosts[0].ssh.known_hosts_file == "/etc/rbee/known_hosts"


def _why(kind: str) -> str:
    """What every field's problem says for a hostile ``kind`` (the check that fires in any field)."""
    if kind == "ssh-option":
        return ""  # each field's own pattern refuses it, with its own words
    return "holds template or shell syntax" if kind in TEMPLATES else "holds the control character"


def _refused_everywhere(file: Path, kind: str, code: int, output: str) -> None:
    text = file.read_text()
    assert code == exits.INVALID_SPEC, output
    for path in STRING_FIELDS:
        problem = _reported(output, file, path, text)
        assert repr(HOSTILE[kind])[1:-1][:40] in problem, problem  # the value shown escaped, never raw
        assert problem.startswith(_why(kind)), problem
    for line in output.rstrip("\n").split("\n"):  # one line per problem: no value adds a line or a control
        assert line.startswith(str(file)) and all(c.isprintable() for c in line), repr(line)
    assert not Path(PWNED).exists()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_string_is_refused_in_every_field(tmp_path: Path, kind: str) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(_with(dict.fromkeys(STRING_FIELDS, HOSTILE[kind])))
    _refused_everywhere(file, kind, *_validate_here(file))


@pytest.mark.parametrize("kind", ["jinja", "shell-command", "ssh-option", "newline", "bidi-override"])
def test_the_installed_cli_refuses_it(tmp_path: Path, kind: str) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(_with(dict.fromkeys(STRING_FIELDS, HOSTILE[kind])))
    result = _validate(file)
    assert result.stdout == ""
    _refused_everywhere(file, kind, result.returncode, result.stderr)


def test_dot_dot_in_every_path_field(tmp_path: Path) -> None:
    file = tmp_path / "cluster.yaml"
    text = _with(dict.fromkeys(PATH_FIELDS, "/opt/../etc/rbee"))
    file.write_text(text)
    code, output = _validate_here(file)
    assert code == exits.INVALID_SPEC
    for path in PATH_FIELDS:
        assert "a path may not contain '..'" in _reported(output, file, path, text)


def test_a_hostile_key_is_named_escaped(tmp_path: Path) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text('cluster: lab\nhosts:\n  - name: a\n    address: 10.0.0.1\n    "{{ 7*7 }}\\n": 1\n')
    code, output = _validate_here(file)
    assert code == exits.INVALID_SPEC
    assert f"{file}:5:5: hosts[0]['{{{{ 7*7 }}}}\\n']: the key holds the control character '\\n'" in output


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (HOSTILE["jinja"], "holds template or shell syntax ('{{')"),
        ("-oProxyCommand=x", "a path of letters, digits and / . _ - + @ only"),
        ("-keys", "a path may not start with '-'"),
        ("/etc/rbee/api keys", "a path of letters, digits and / . _ - + @ only"),
        ("../keys", "a path may not contain '..'"),
    ],
)
def test_the_api_keys_file_is_a_plain_path(value: str, message: str) -> None:
    base = copy.deepcopy(BASE)
    base["queen"]["api_keys"] = {"file": "/etc/rbee/api-keys"}
    assert parse_spec(_with({}, base)).queen.api_keys is not None
    with pytest.raises(SpecError) as caught:
        parse_spec(_with({("queen", "api_keys", "file"): value}, base), "cluster.yaml")
    (issue,) = caught.value.issues
    assert issue.path == ("queen", "api_keys", "file") and message in issue.message + issue.render("f")


# ---------------------------------------------------------------------------------------------- YAML limits

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_the_billion_laughs_are_refused_at_once(tmp_path: Path) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        load_spec(file)
    assert time.perf_counter() - started < 1.0
    assert "YAML aliases expand the document to more than 20000 values" in str(caught.value)
    result = _validate(file)
    assert result.returncode == exits.INVALID_SPEC
    assert re.search(rf"^{re.escape(str(file))}:\d+:\d+: \(root\): YAML aliases expand", result.stderr, re.M)


def test_a_few_aliases_are_still_fine() -> None:
    text = "cluster: lab\nhosts:\n  - {name: a, address: 10.0.0.1, ssh: &ssh {user: deploy, port: 2222}}\n"
    spec = parse_spec(text + "  - {name: b, address: 10.0.0.2, ssh: *ssh}\n")
    assert spec.hosts[1].ssh.user == "deploy" and spec.hosts[1].ssh.port == 2222


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("cluster: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels", 1),
        ("x: &x [1, [2, 3]]\n" + "".join(f"x{i}: &x{i} [*x{i - 1 if i else ''}]\n" for i in range(40)),
         "nested deeper than 32 levels through", 30),
        ("a: &a [x, *a]\n", "the alias *a refers to a value that contains it", 1),
        ("cluster: lab\nhosts: [" + "1," * 20_001 + "]\n", "the document holds more than 20000 values", 2),
        ("cluster: lab\nhosts: \x01\n", "the character '\\x01' is not allowed in a spec", 2),
    ],
)  # fmt: skip
def test_yaml_over_a_limit_is_refused_with_its_line(text: str, message: str, line: int) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "cluster.yaml")
    (issue,) = caught.value.issues
    assert message in issue.message and issue.mark is not None and issue.mark.line == line, issue.render("f")


def test_a_huge_or_binary_file_is_refused_before_parsing(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("cluster: lab\n# " + "x" * (1024 * 1024) + "\n")
    code, output = _validate_here(huge)
    assert code == exits.INVALID_SPEC and "the file is larger than 1048576 bytes" in output
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"cluster: lab\nhosts: \xff\xfe\n")
    code, output = _validate_here(binary)
    assert code == exits.INVALID_SPEC and f"{binary}:2:1: (root): not UTF-8 text" in output


# ---------------------------------------------------------------------------------------------- nothing reaches a file


def test_a_hostile_spec_writes_no_inventory(tmp_path: Path) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(_with({("deploy", "prefix"): HOSTILE["newline"], ("cluster",): HOSTILE["jinja"]}))
    out = tmp_path / "inventory.yml"
    result = subprocess.run([str(RBEE), "spec", "ansible-inventory", str(file), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == exits.INVALID_SPEC and "deploy.prefix: holds the control character" in result.stderr
    assert not out.exists()
    adapter = subprocess.run([sys.executable, str(ROOT / "inventory" / "inventory.py")], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "RBEE_SPEC": str(file)})  # fmt: skip
    assert adapter.returncode == 2 and "cluster: holds template or shell syntax" in adapter.stderr


def test_a_value_forced_past_the_spec_cannot_add_a_line_to_a_unit() -> None:
    spec = parse_spec(_with({}), "cluster.yaml")
    forced = spec.model_copy(update={"deploy": spec.deploy.model_copy(update={"prefix": "/opt/r\nUser=root"})})
    plan_deployed_host(spec, "a", parse_probe(PROBE))  # the same spec, not forced, renders
    with pytest.raises(
        RenderError, match=r"\.j2: [\w.\[\]]+ holds the control character '\\n' \(got '/opt/r\\nUser=root"
    ):
        plan_deployed_host(forced, "a", parse_probe(PROBE))


def test_render_names_the_field_and_checks_every_printed_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.j2").write_text("A={{ items[0].text }}\nB={{ thing.text }}\n")
    monkeypatch.setenv("RBEE_TEMPLATES", str(tmp_path))
    with pytest.raises(RenderError, match=r"^t\.j2: items\[0\]\.text holds the control character '\\r'"):
        render("t.j2", {"items": [{"text": "x\rUser=root"}], "thing": None})

    class Opaque:  # not a mapping, list or dataclass: only the finalize hook sees its text
        text = "x\nUser=root"

    with pytest.raises(RenderError, match=r"^t\.j2: a rendered value holds the control character '\\n'"):
        render("t.j2", {"items": [{"text": "ok"}], "thing": Opaque()})
    assert render("t.j2", {"items": [{"text": "ok"}], "thing": {"text": "fine"}}) == "A=ok\nB=fine\n"


# ---------------------------------------------------------------------------------------------- Ansible and SSH


@pytest.mark.skipif(not ANSIBLE.exists(), reason="ansible-core is not installed in this venv")
def test_ansible_does_not_template_a_value_forced_into_the_inventory(tmp_path: Path) -> None:
    """The emitter called directly (no validation): Ansible prints the text and runs nothing; the same
    inventory without ``!unsafe`` would run the lookup (checked too, so this test can fail)."""
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text("cluster: home\nhosts:\n  - {name: box, address: localhost}\n")
    marker = tmp_path / "pwned"
    inventory = ansible_inventory(load_spec(spec_file), spec_file)
    inventory["all"]["vars"]["rbee_cluster"] = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    inventory["all"]["vars"]["rbee_deploy"]["prefix"] = "/opt/{{ 6 * 7 }}"

    def debug(text: str) -> str:
        path = tmp_path / "inventory.yml"
        path.write_text(text)
        done = subprocess.run(
            [str(ANSIBLE), "box", "-i", str(path), "-m", "ansible.builtin.debug",
             "-a", "msg={{ rbee_cluster }}|{{ rbee_deploy.prefix }}|{{ ansible_python_interpreter }}"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    shown = debug(inventory_yaml(inventory))
    assert "lookup(''pipe'', ''touch" in shown and "/opt/{{ 6 * 7 }}" in shown and not marker.exists()
    assert str(BIN / "python") in shown or sys.executable in shown  # rbee's own template still works
    debug(yaml.safe_dump(inventory))
    assert marker.exists(), "without !unsafe Ansible templates the value: the check above would mean nothing"


class Unsafe(str):
    """A string the inventory marks ``!unsafe``."""


class InventoryReader(yaml.SafeLoader):
    """Reads ``!unsafe`` scalars as ``Unsafe``, every other string as ``str``."""


InventoryReader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))  # type: ignore[arg-type]


def _plain_strings(value: Any, path: str = "") -> list[str]:
    """Where the inventory holds a string that is not ``!unsafe``."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _plain_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _plain_strings(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and not isinstance(value, Unsafe) else []


def test_every_spec_string_in_the_inventory_is_unsafe(tmp_path: Path) -> None:
    """Values the spec allows, unusual ones included, reach the inventory marked ``!unsafe``; only rbee's own
    template (a local host's interpreter) is not."""
    spec_file = tmp_path / "cluster.yaml"
    allowed = {
        ("hosts", 0, "address"): "fd00::1",
        ("hosts", 0, "ssh", "key"): "~/.ssh/id+rbee@lab",
        ("models", 0, "source"): "https://models.example.org:8443/m%20q.gguf?sig=a+b&v=1",
    }
    base = copy.deepcopy(BASE)
    base["hosts"].append({"name": "local", "address": "localhost"})
    spec_file.write_text(_with(allowed, base))
    text = inventory_yaml(ansible_inventory(load_spec(spec_file), spec_file))
    data = yaml.load(text, Loader=InventoryReader)
    hosts = data["all"]["children"]["hives"]["hosts"]
    # connection variables stay plain when no template can be made of their characters (testinfra reads them)
    assert hosts["a"]["ansible_host"] == "fd00::1" and not isinstance(hosts["a"]["ansible_host"], Unsafe)
    assert data["all"]["vars"]["rbee_deploy"]["prefix"] == "/opt/rbee"
    assert hosts["a"]["rbee_models"][0]["source"] == allowed[("models", 0, "source")]
    plain = _plain_strings(data)
    assert ".all.children.hives.hosts.local.ansible_python_interpreter" in plain
    assert all(p.rsplit(".", 1)[1].startswith("ansible_") for p in plain), plain
    forced = yaml.load(inventory_yaml({"ansible_host": "{{ lookup('pipe', 'id') }}", "ansible_user": "root"}),
                       Loader=InventoryReader)  # fmt: skip
    assert isinstance(forced["ansible_host"], Unsafe) and not isinstance(forced["ansible_user"], Unsafe)
    assert hosts["local"]["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


def test_ssh_common_args_are_quoted_options_with_a_checked_path() -> None:
    base = {"ssh_hostname": "10.0.0.1", "ssh_port": 22, "ssh_user": "root"}
    args = connection_vars({**base, "ssh_known_hosts_file": "/etc/rbee/known+hosts"})["ansible_ssh_common_args"]
    assert shlex.split(args) == ["-o", "UserKnownHostsFile=/etc/rbee/known+hosts"]
    for hostile in ("/k -oProxyCommand=touch /tmp/x", "/k\n", "%d/known_hosts", "${HOME}/k"):
        with pytest.raises(ValidationError):
            connection_vars({**base, "ssh_known_hosts_file": hostile})


def _ssh_config(options: list[str], destination: str) -> dict[str, str]:
    done = subprocess.run(["ssh", "-G", *options, destination], capture_output=True, text=True, check=True, timeout=30)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def test_the_builder_ssh_argv_is_options_then_the_destination() -> None:
    """OpenSSH itself reads the argv (``ssh -G`` prints the configuration it would use, connecting nowhere)."""
    remote = ssh_remote(SshTarget("b", "10.0.0.2", 2222, "deploy", "/keys/id", "/etc/rbee/known_hosts"))
    assert "--" not in remote.options and remote.destination == "deploy@10.0.0.2"  # SshRemote adds "--" itself
    config = _ssh_config([*remote.options, "--"], remote.destination)
    assert config["port"] == "2222" and config["user"] == "deploy" and config["hostname"] == "10.0.0.2"
    assert config["userknownhostsfile"] == "/etc/rbee/known_hosts" and "proxycommand" not in config
    for hostile in (
        SshTarget("b", "-oProxyCommand=touch /tmp/x", user="root"),
        SshTarget("b", "10.0.0.2", user="-oProxyCommand=x"),
        SshTarget("b", "10.0.0.2", known_hosts_file="/k -oProxyCommand=x"),
    ):
        with pytest.raises(ValidationError):
            ssh_remote(hostile)
