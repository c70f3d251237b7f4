"""``rbee plan``'s outputs: the terminal table and diffs, the pull-request markdown, the JSON, from real host plans.

The secrets test builds a cluster with API keys, a cluster secret and TLS (made by rbee's own code in a temp
state folder), changes every file that holds a secret and pastes secrets into the files that should not hold
them, and checks that no secret shows in any format. The markdown is parsed by a CommonMark parser
(markdown-it-py, with GFM tables) to check that hostile file content stays inside its code block.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from rbee.cli.rollout_cmd import _redactor
from rbee.deploy.change_report import HostChanges, HostText, host_changes, texts_to_read
from rbee.deploy.cluster_ca import tls_dir, tls_for
from rbee.deploy.cluster_secret import cluster_secret
from rbee.deploy.host_diff import RunInputs, diff, wanted_state
from rbee.deploy.host_plan import HostPlan, plan_deployed_host
from rbee.deploy.probe import parse_probe
from rbee.deploy.redact import MARKER, Redactor, spec_secrets
from rbee.rollout import plan_render
from rbee.rollout.plan import SCHEMA_VERSION, Plan, PruneHost, build_plan
from rbee.spec import parse_spec
from rbee.spec.models import ClusterSpec
from rbee_runtime.common.credentials import hive_credential, worker_credential
from tests.deploy.deployed_state import PROBE, deployed

SPEC = """cluster: plantest
queen: {host: a, api_keys: {env: PLAN_TEST_KEYS}}
hosts:
  - {name: a, address: 10.0.0.5}
  - {name: b, address: 10.0.0.6}
models:
  - {id: m, source: 'file:///m.gguf', context: 1024}
placements:
  - {model: m, hosts: [a], slots: 2}
deploy: {tls: true}
"""
KEYS = ("sk-live-4f9c2a7e1b33", "sk-live-second-0d3e7")
INPUTS = RunInputs(
    wheelhouse="wh1fingerprint0",
    engine_key="0.3.36-cpu",
    engine_wheel=("/opt/rbee/engines/0.3.36-cpu/llama.whl", "cd" * 32),
    models={"m": "ab" * 32},
    release="wh1fingerprint0:0.3.36-cpu",
    service_models={"m": "ab" * 32},
    record='{"cluster": "plantest"}\n',
)
UNIT = "/etc/systemd/system/rbee-hive.service"
HOSTILE = [
    "````",
    " ```",
    "~~~",
    "</details>",
    "<script>alert(1)</script>",
    "@everyone see [this](javascript:alert(1))",
    "| a | b |",
    "[red]not markup[/red]",
    "\x1b[2J\x1b]0;owned\x07",
]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ClusterSpec, Path]:
    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("RBEE_CLUSTER_SECRET", raising=False)
    monkeypatch.setenv("PLAN_TEST_KEYS", ",".join(KEYS))
    spec_file = tmp_path / "cluster.yaml"
    spec_file.write_text(SPEC)
    return parse_spec(SPEC, str(spec_file)), spec_file


def host_plan(spec: ClusterSpec, name: str) -> HostPlan:
    keys = "\n".join(KEYS) + "\n" if name == "a" else None
    return plan_deployed_host(spec, name, parse_probe(PROBE), {"m": 2**20}, keys, cluster_secret(spec.cluster),
                              tls_for(spec, name))  # fmt: skip




def changed(plan: HostPlan, redactor: Redactor, on_host: dict[str, str], edit: tuple[str, ...] = ()) -> HostChanges:
    """The host's changes when the files ``on_host`` (path → text there) and ``edit`` differ from the plan."""
    wanted = wanted_state(plan, INPUTS)
    state = deployed(wanted)
    for path in (*on_host, *edit):
        state.files[path] = replace(state.files[path], sha256="0" * 64)
    changes = diff(wanted, state)
    shown = texts_to_read(plan, changes)
    current = {p: HostText(t.encode(), len(t.encode())) for p, t in on_host.items() if p in shown}
    return host_changes(plan, wanted, changes, state, current, redactor)


def outputs(plan: Plan) -> dict[str, str]:
    """The plan in every format ``rbee plan`` prints."""
    console = Console(file=io.StringIO(), width=250)
    plan_render.terminal(plan, console)
    return {
        "text": console.file.getvalue(),  # type: ignore[attr-defined]
        "markdown": plan_render.markdown(plan, {"c": "c: connection refused"}),
        "json": json.dumps(plan.as_json()),
    }


def every_secret(spec: ClusterSpec) -> list[str]:
    """Each secret of the cluster, and each line of its private keys."""
    secret = cluster_secret(spec.cluster)
    assert secret is not None
    hives = [hive_credential(secret, h) for h in ("a", "b")]
    keys = [p.read_text() for p in [tls_dir(spec.cluster) / "ca.key", *tls_dir(spec.cluster).glob("hosts/*.key")]]
    lines = [line for key in keys for line in key.splitlines() if "PRIVATE KEY" not in line]
    return [*KEYS, secret, *hives, *map(worker_credential, hives), *lines]


def test_no_secret_shows_in_any_format_even_where_a_changed_file_holds_it(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, spec_file = cluster
    a, b = host_plan(spec, "a"), host_plan(spec, "b")
    secrets = every_secret(spec)
    tls_key = (tls_dir(spec.cluster) / "hosts" / "a.key").read_text()
    redactor = Redactor(spec_secrets(spec, spec_file.parent, cluster_secret(spec.cluster))).with_secrets(
        f.text for f in a.files if f.secret
    )
    queen = a.file("/etc/rbee/queen.yaml").text
    hand_edited = {  # a careless operator pasted secrets into files that are shown
        "/etc/rbee/queen.yaml": f"{queen}# keys: {KEYS[0]} {KEYS[1]}\n# {secrets[2]}\nhf_token: hf_unknown_0123\n",
        UNIT: a.file(UNIT).text + f"Environment=RBEE_CREDENTIAL={hive_credential(secrets[2], 'a')}\n" + tls_key,
        "/etc/rbee/credentials/ca.crt": "old CA\n",
    }
    secret_files = tuple(f.path for f in a.files if f.secret)  # every file that holds a secret changed too
    found = changed(a, redactor, hand_edited, edit=secret_files)
    assert {f.path for f in (*found.files, *found.units) if f.secret} == set(secret_files)
    assert all(f.diff == "" for f in (*found.files, *found.units) if f.secret)
    queen_diff = next(f.diff for f in found.files if f.path == "/etc/rbee/queen.yaml")
    assert f"-# keys: {MARKER} {MARKER}" in queen_diff and f"-hf_token: {MARKER}" in queen_diff
    plan = Plan(
        changes={"a": ["services: queen config"], "b": []},
        failing={"b": [f"a problem quoting {KEYS[1]}"]},  # the CLI's second pass: any text, redacted
        unreachable=["c"],
        hosts={"a": found, "b": changed(b, Redactor(), {})},
        order=["a", "b", "c"],
    ).redacted(_redactor(spec_file))
    for name, text in outputs(plan).items():
        assert MARKER in text, name
        leaked = [s for s in secrets if s in text]
        assert leaked == [], (name, leaked)


def test_the_cli_redactor_creates_no_state(cluster: tuple[ClusterSpec, Path], tmp_path: Path) -> None:
    _, spec_file = cluster
    assert _redactor(spec_file).text(f"{KEYS[0]} x") == f"{MARKER} x"
    assert not (tmp_path / "state").exists()  # no cluster secret, no CA made by a plan


def test_hostile_content_stays_inside_its_code_block(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    a = host_plan(spec, "a")
    found = changed(a, Redactor(), {UNIT: a.file(UNIT).text + "\n".join(HOSTILE) + "\n"})
    (unit,) = found.units
    text = plan_render.markdown(Plan(changes={"a": []}, hosts={"a": found}, order=["a"]), {})
    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(text)
    fences = [t for t in tokens if t.type == "fence"]
    assert [(t.info, t.content) for t in fences] == [("diff", unit.diff + "\n")]  # the whole diff, verbatim
    html = [t.content.strip() for t in tokens if t.type in ("html_block", "html_inline")]
    assert html == ["<details><summary><b>a</b>: 2 change(s)</summary>", "</details>"]
    inline = [c for t in tokens if t.type == "inline" for c in t.children or []]
    assert not [c for c in inline if c.type in ("link_open", "html_inline")]
    assert "\x1b" not in text and "\\x1b[2J" in unit.diff


def test_code_spans_and_fences_hold_any_backticks_and_pipes() -> None:
    for text in ("plain", "a`b", "``x``", "`start", "end`", "a | b"):
        cell = f"| h |\n|---|\n| {plan_render.code(text, in_table=True)} |\n"
        tokens = MarkdownIt("commonmark").enable("table").parse(cell)
        inline = next(t for t in tokens if t.type == "inline" and t.map and t.map[0] == 2)
        assert [c.content for c in inline.children or [] if c.type == "code_inline"] == [text]
    body = "x\n````\n ```\ny"
    assert plan_render.fenced(body).startswith("`````diff\n")


def test_the_terminal_prints_text_as_text_without_colours_when_piped(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    a = host_plan(spec, "a")
    found = changed(a, Redactor(), {UNIT: a.file(UNIT).text + "\n".join(HOSTILE) + "\n"})
    text = outputs(Plan(changes={"a": []}, hosts={"a": found}, order=["a"]))["text"]
    assert "\x1b" not in text and "[red]not markup[/red]" in text and "\\x1b[2J" in text
    assert "rbee plan: 1 of 1 host(s) change" in text and "a: 2 change(s)" in text
    assert f"    --- a:{UNIT} (on the host)" in text and "    -[red]not markup[/red]" in text


def test_the_json_keeps_the_old_keys_and_adds_each_hosts_changes(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    a = host_plan(spec, "a")
    found = changed(a, Redactor(), {UNIT: a.file(UNIT).text + "X=1\n"})
    document = {"plan": [{"names": ["rbee services | services: unit rbee-hive.service"], "hosts_with_change": ["a"]},
                         {"names": ["rbee models | models: m"], "hosts_with_change": []}]}  # fmt: skip
    report = {"hosts": {"a": {"problems": []}, "b": {"problems": ["python3 is not installed"]}},
              "plans": {"a": found.model_dump(mode="json"), "b": {"not": "a plan"}}}  # fmt: skip
    plan = build_plan(document, report, ["a", "b", "c"])
    assert [plan.status(h) for h in plan.names()] == ["changes", "failing", "unreachable"] and plan.pending
    data = json.loads(json.dumps(plan.as_json({"c": {"kind": "refused"}})))
    assert data["version"] == SCHEMA_VERSION and data["pending"] is True and data["prune"] == []
    assert data["changes"] == {"a": ["services: unit rbee-hive.service"], "b": []}
    assert data["failing"] == {"b": ["python3 is not installed"]} and data["unreachable"] == ["c"]
    assert data["ssh"] == {"c": {"kind": "refused"}}
    assert list(data["hosts"]) == ["a", "b", "c"]
    assert data["hosts"]["a"]["status"] == "changes" and data["hosts"]["a"]["operations"] == data["changes"]["a"]
    assert HostChanges.model_validate(data["hosts"]["a"]["changes"]) == found
    assert data["hosts"]["b"] == {"status": "failing", "problems": ["python3 is not installed"], "changes": None,
                                  "operations": []}  # fmt: skip
    assert data["hosts"]["c"]["status"] == "unreachable"


def test_nothing_to_do_is_a_table_of_hosts_up_to_date(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    same = {h: changed(host_plan(spec, h), Redactor(), {}) for h in ("a", "b")}
    plan = Plan(changes={"a": [], "b": []}, hosts=same, order=["a", "b"])
    assert not plan.pending
    shown = outputs(plan)
    assert "rbee plan: nothing to do" in shown["text"] and "<details>" not in shown["markdown"]
    assert "| `a` | up to date | - | - | - | - | - | - |" in shown["markdown"]


def test_diffs_past_the_comment_budget_are_named_not_shown(cluster: tuple[ClusterSpec, Path]) -> None:
    spec, _ = cluster
    a = host_plan(spec, "a")
    found = changed(a, Redactor(), {UNIT: "old\n", "/etc/rbee/hive.yaml": "old\n"})
    plan = Plan(changes={"a": []}, hosts={"a": found}, order=["a"])
    first = len(plan_render.fenced(found.files[0].diff))
    text = plan_render.markdown(plan, {}, budget=first)
    assert text.count("```diff") == 1
    assert f"`{UNIT}`: diff left out (the comment's size limit); run `rbee plan` to see it" in text


def test_hosts_to_prune_and_to_forget_show_apart_in_every_format() -> None:
    """A host to prune lists what goes; one to forget (``rbee plan --forget``) says nothing is sent to it."""
    plan = Plan(changes={}, hosts={}, order=[])
    plan.prune = [PruneHost(host="c", removes=["services: unit rbee-hive.service", "/opt/rbee/models/m.gguf"]),
                  PruneHost(host="d", removes=["services: unit rbee-hive.service"], forget=True)]  # fmt: skip
    shown = outputs(plan)
    for text in (shown["text"], shown["markdown"]):
        assert "1 to prune; 1 to forget" in text
        assert "c: to prune (it left the spec)" in text.replace("<b>", "").replace("</b>", "")
        assert "d: to forget (gone for good, --forget)" in text.replace("<b>", "").replace("</b>", "")
        assert text.count("stop and remove") == 2, "the forgotten host's units are not listed"
        assert "nothing is sent to it" in text
    assert "| to forget |" in shown["markdown"] and "| to prune |" in shown["markdown"]
    assert [(p["host"], p["forget"]) for p in json.loads(shown["json"])["prune"]] == [("c", False), ("d", True)]
