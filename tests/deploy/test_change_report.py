"""``rbee plan``'s data: a host's changes by kind, diffs of its changed text files, secrets redacted.

Real host plans (``plan_deployed_host``), their wanted state and the diff against a host state built as a
deploy leaves it, then drifted one way at a time; the script that reads the files' current contents runs for
real (``python3`` on files of a temp folder standing in for a host).
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from rbee.deploy.change_report import HostText, host_changes, texts_to_read
from rbee.deploy.host_diff import RunInputs, Wanted, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.host_state import HostState, Meta, RemoteFile, UnitState
from rbee.deploy.probe import parse_probe
from rbee.deploy.redact import MARKER, Redactor, spec_secrets
from rbee.deploy.text_diff import MAX_DIFF_LINES, MAX_TEXT_BYTES, printable, text_diff
from rbee.deploys.plan_export import READ_SCRIPT, RbeeFileTexts
from rbee.spec import parse_spec
from rbee_runtime.common.credentials import hive_credential, worker_credential
from tests.deploy.deployed_state import PROBE, SPEC, deployed

KEYS = "sk-live-4f9c2a7e1b\nsk-live-second-0d3e\n"
SECRET = "5e" * 32
MODEL_SHA = "ab" * 32
INPUTS = RunInputs(
    wheelhouse="wh1fingerprint0",
    engine_key="0.3.36-cpu",
    engine_wheel=("/opt/rbee/engines/0.3.36-cpu/llama.whl", "cd" * 32),
    models={"m": MODEL_SHA},
    release="wh1fingerprint0:0.3.36-cpu",
    service_models={"m": MODEL_SHA},
    record='{"cluster": "t"}\n',
)
UNIT = "/etc/systemd/system/rbee-hive.service"
MODEL = "/opt/rbee/models/m.gguf"


def plan() -> HostPlan:
    return plan_deployed_host(parse_spec(SPEC, "cluster.yaml"), "a", parse_probe(PROBE), {"m": 2**20}, KEYS, SECRET)




@pytest.fixture
def wanted() -> Wanted:
    return wanted_state(plan(), INPUTS)


def edited(state: HostState, path: str) -> HostState:
    """``state`` with the file at ``path`` edited (another digest)."""
    state.files[path] = replace(state.files[path], sha256="0" * 64)
    return state


def test_a_hand_edited_unit_is_one_unit_change_with_its_diff(wanted: Wanted) -> None:
    host = plan()
    state = edited(deployed(wanted), UNIT)
    changes = diff(wanted, state)
    assert texts_to_read(host, changes) == [UNIT]
    on_host = host.file(UNIT).text + "Environment=EDITED=1\n"
    found = host_changes(host, wanted, changes, state, {UNIT: HostText(on_host.encode(), len(on_host))}, Redactor())
    assert found.files == [] and found.models == [] and found.services == [] and found.setup == []
    assert found.engine is None and found.runtime is None and found.daemon_reload
    (unit,) = found.units
    assert (unit.path, unit.label, unit.action, unit.note) == (UNIT, "unit rbee-hive.service", "update", "")
    lines = unit.diff.splitlines()
    assert lines[:2] == [f"--- a:{UNIT} (on the host)", f"+++ a:{UNIT} (planned)"]
    assert [line for line in lines[2:] if line[:1] in "+-"] == ["-Environment=EDITED=1"]
    assert found.count == 2 and found.pending


def test_a_bare_host_gets_everything_and_says_so(wanted: Wanted) -> None:
    host = plan()
    changes = diff(wanted, HostState())
    assert texts_to_read(host, changes) == []  # nothing on the host to read: every file is created
    found = host_changes(host, wanted, changes, HostState(), {}, Redactor(), model_bytes={"m": 3 * 2**20},
                         engine_cached=False)  # fmt: skip
    assert {f.path for f in (*found.files, *found.units)} == {f.path for f in wanted.files}
    assert all(f.action == "create" for f in (*found.files, *found.units))
    hive = next(f for f in found.files if f.path == "/etc/rbee/hive.yaml")
    assert hive.diff.startswith("--- /dev/null\n+++ a:/etc/rbee/hive.yaml (planned)\n")
    assert '+hive_id: "a"' in hive.diff
    keys = next(f for f in found.files if f.label == "queen API keys")
    assert keys.secret and keys.diff == "" and keys.note == "secret: the content is never shown"
    assert [(m.model, m.action, m.size_bytes, m.current_bytes) for m in found.models] == [("m", "add", 3 * 2**20, None)]
    assert found.engine is not None and found.engine.action == "build and install"
    assert (found.engine.features, found.engine.current) == ("0.3.36-cpu", "")
    assert found.runtime is not None and found.runtime.action == "sync and install"
    assert {s.service for s in found.services} == set(wanted.services)
    assert all(s.action == "restart" and s.enable and s.why == ["not started by rbee yet"] for s in found.services)
    assert "service account rbee: the service account is missing" in found.setup
    assert any(line.startswith("folder /etc/rbee: missing") for line in found.setup)


def test_restarts_name_what_changed(wanted: Wanted) -> None:
    host = plan()
    new_inputs = replace(INPUTS, models={"m": "00" * 32}, service_models={"m": "00" * 32}, wheelhouse="wh2",
                         release="wh2:0.3.36-cpu")  # fmt: skip
    new = wanted_state(host, new_inputs)
    state = deployed(wanted)
    found = host_changes(host, new, diff(new, state), state, {}, Redactor(), model_bytes={"m": 2**20})
    assert [(m.model, m.action, m.current_bytes) for m in found.models] == [("m", "replace", 100)]
    assert found.runtime is not None and found.runtime.action == "sync and install"
    assert (found.runtime.wheelhouse, found.runtime.current) == ("wh2", "wh1fingerprint0")
    why = {s.service: s.why for s in found.services}
    assert why["rbee-hive.service"] == ["model m replaced", "runtime reinstalled"]
    assert why["rbee-queen.service"] == ["runtime reinstalled"]


def test_a_stopped_service_a_removed_worker_and_a_changed_mode(wanted: Wanted) -> None:
    host = plan()
    state = deployed(wanted)
    state.units["rbee-hive.service"] = UnitState(enabled=True, active=False)
    state.files["/etc/rbee/workers/old-1.env"] = RemoteFile("1" * 64, Meta("640", "root", "rbee"))
    state.files["/etc/rbee/hive.yaml"] = replace(state.files["/etc/rbee/hive.yaml"], meta=Meta("666", "root", "rbee"))
    state.big[MODEL] = replace(state.big[MODEL], mode="600")
    found = host_changes(host, wanted, diff(wanted, state), state, {}, Redactor())
    assert [(s.service, s.action, s.why) for s in found.services] == [
        ("rbee-hive.service", "start", ["not running"]),
        ("rbee-worker@old-1.service", "stop", ["no longer placed on this host: removed"]),
    ]
    assert [(f.path, f.action, f.why) for f in found.files] == [("/etc/rbee/hive.yaml", "mode", "mode 666, wanted 640")]
    assert [(m.model, m.action) for m in found.models] == [("m", "mode")]
    assert found.setup == []
    assert [s.service for s in found.restarts] == ["rbee-hive.service", "rbee-worker@old-1.service"]


def test_a_file_the_host_did_not_return_is_named_not_compared(wanted: Wanted) -> None:
    state = edited(deployed(wanted), "/etc/rbee/hive.yaml")
    found = host_changes(plan(), wanted, diff(wanted, state), state, {}, Redactor())
    (hive,) = found.files
    assert hive.diff == "" and hive.note == "not compared: the host's copy could not be read"


# ---------------------------------------------------------------------------------------------- text diffs


def test_large_binary_and_invisible_differences_are_named() -> None:
    none = Redactor()
    assert text_diff("f", b"x" * 10, "y" * (MAX_TEXT_BYTES + 1), none).note == "not compared: over 128 KiB"
    assert text_diff("f", b"", "y", none, current_size=MAX_TEXT_BYTES + 1).note == "not compared: over 128 KiB"
    assert text_diff("f", b"a\0b", "a", none).note == "not compared: the file on the host is not UTF-8 text"
    assert text_diff("f", b"\xff\xfe", "a", none).note == "not compared: the file on the host is not UTF-8 text"
    assert text_diff("f", b"a\n", "a", none).note.startswith("differs only in")
    crlf = text_diff("f", b"a\r\nb\r\n", "a\nb\n", none).diff
    assert "-a\\x0d" in crlf and "+a" in crlf
    long = text_diff("f", b"", "".join(f"{i}\n" for i in range(1000)), none)
    assert len(long.diff.splitlines()) == MAX_DIFF_LINES and long.note == f"cut at {MAX_DIFF_LINES} of 1003 lines"


def test_control_characters_and_reordering_marks_are_shown_escaped() -> None:
    assert printable("a\x1b[31mred\x07\tok\n") == "a\\x1b[31mred\\x07\tok\n"
    assert printable("x\u202eevil\u2066") == "x\\u202eevil\\u2066"
    shown = text_diff("f", b"old\x1b]0;title\x07\n", "new\n", Redactor()).diff
    assert "\x1b" not in shown and "\x07" not in shown and "-old\\x1b]0;title\\x07" in shown


# ---------------------------------------------------------------------------------------------- redaction


def test_known_secrets_are_replaced_everywhere_and_longest_first() -> None:
    redactor = Redactor(["sk-live-4f9c2a7e1b", "sk-live-4f9c", "abc", "-----BEGIN X-----\n" + "Q" * 64 + "\n"])
    assert redactor.text("key sk-live-4f9c2a7e1b, sk-live-4f9c.") == f"key {MARKER}, {MARKER}."
    assert redactor.text("abc stays: too short to be a secret") == "abc stays: too short to be a secret"
    assert redactor.text("line " + "Q" * 64) == f"line {MARKER}"  # a line of a multi-line secret, alone


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("token: hf_abcdefgh", f"token: {MARKER}"),
        ("  - api_key = 'xyz123456'", f"  - api_key = {MARKER}"),
        ("export DB_PASSWORD=hunter2", f"export DB_PASSWORD={MARKER}"),
        ("Authorization: Bearer abc.def", f"Authorization: {MARKER}"),
        ("SetCredential=hive.credential:5e5e5e5e", f"SetCredential={MARKER}"),
        ('credential_file: "${CREDENTIALS_DIRECTORY}/hive.credential"', None),
        ("LoadCredential=hive.credential:/etc/rbee/credentials/hive.credential", None),
        ('api_keys_file: "/etc/rbee/credentials/api-keys"', None),
        ('api_keys_env: "RBEE_API_KEYS"', None),
        ("source: https://user:pa55word@models.example/m.gguf", f"source: https://{MARKER}@models.example/m.gguf"),
        ("url: https://h/m.gguf?download=1&token=abc123", f"url: https://h/m.gguf?download=1&token={MARKER}"),
        ("Description=rbee hive (a): model catalog", None),
    ],
)
def test_values_of_secret_looking_keys_are_replaced(line: str, shown: str | None) -> None:
    assert Redactor().text(line) == (line if shown is None else shown)


def test_private_keys_are_replaced_line_by_line() -> None:
    text = "a: 1\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\nAwEHoUQD\n-----END EC PRIVATE KEY-----\nb: 2\n"
    assert Redactor().text(text) == (
        f"a: 1\n-----BEGIN EC PRIVATE KEY-----\n{MARKER}\n{MARKER}\n-----END EC PRIVATE KEY-----\nb: 2\n"
    )


def test_the_spec_secrets_are_the_keys_the_cluster_secret_every_credential_and_the_tls_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PLAN_TEST_KEYS", "sk-one-1234,sk-two-5678")
    keyed = SPEC.replace("queen: {host: a}", "queen: {host: a, api_keys: {env: PLAN_TEST_KEYS}}")
    spec = parse_spec(keyed, "cluster.yaml")
    key_file = tmp_path / "state" / "clusters" / "t" / "tls" / "hosts" / "a.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nKEYBODY\n-----END PRIVATE KEY-----\n")
    found = spec_secrets(spec, tmp_path, SECRET)
    hives = [hive_credential(SECRET, h) for h in ("a", "b")]
    assert set(found) == {"sk-one-1234", "sk-two-5678", SECRET, *hives, *map(worker_credential, hives),
                          key_file.read_text()}  # fmt: skip
    monkeypatch.setenv("PLAN_TEST_KEYS", "")
    assert spec_secrets(spec, tmp_path, None) == [key_file.read_text()]  # no keys readable, no cluster secret


# ---------------------------------------------------------------------------------------------- reading files


def test_the_read_script_returns_contents_sizes_and_skips_what_it_cannot_read(tmp_path: Path) -> None:
    small, big, missing = tmp_path / "hive.yaml", tmp_path / "big.yaml", tmp_path / "absent.yaml"
    small.write_bytes(b"port: 7835\n\xff")
    big.write_bytes(b"x" * (MAX_TEXT_BYTES + 1))
    fact = RbeeFileTexts()
    command = fact.command([str(small), str(big), str(missing)])
    assert READ_SCRIPT.splitlines()[0] in command
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, timeout=30)
    found = fact.process([*done.stdout.splitlines(), "not json", '{"path": "x"}'])
    assert found == {
        str(small): HostText(b"port: 7835\n\xff", 12),
        str(big): HostText(b"", MAX_TEXT_BYTES + 1),  # too large: its size only
    }
    assert fact.process([]) == {} == RbeeFileTexts.default()
