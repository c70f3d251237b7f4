"""``--json`` on the listing commands and ``spec validate`` (one JSON document on stdout, nothing else there),
and tables piped to a file (whole rows).

The ``ls`` commands ask a real queen, told about a hive and its workers by the heartbeat a hive sends.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import rbee
from tests.support.processes import ProcessPool
from tests.support.services import QueenProc, start_queen
from tests.support.wire import heartbeat, worker_info

ROOT = Path(__file__).parents[2]
EXAMPLE = str(ROOT / "inventory" / "cluster.example.yaml")
LONG = "w-" + "x" * 150  # a worker id wider than any terminal


@pytest.fixture(scope="module")
def queen(module_processes: ProcessPool) -> Iterator[QueenProc]:
    """A queen (default timings: the hive stays online) that knows hive ``h1`` with two workers of ``m``."""
    proc = start_queen(module_processes, fast=False)
    proc.wait_healthy()
    workers = [worker_info("w-1", "m", slots=2), worker_info(LONG, "m")]
    beat = heartbeat("h1", models=["m"], workers=workers, url="http://127.0.0.1:9")
    response = proc.http.post("/v1/hives/heartbeat", json=beat.model_dump(mode="json"))
    assert response.status_code == 200, response.text
    yield proc


def _json(*args: str, env: dict[str, str] | None = None) -> object:
    done = rbee(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_workers_ls_json_is_the_queen_api(queen: QueenProc) -> None:
    env = {**os.environ, "RBEE_QUEEN_URL": queen.url}
    listed = _json("workers", "ls", env=env)
    assert listed == {"workers": sorted(queen.workers(), key=lambda w: w["worker_id"])}
    assert [(w["worker_id"], w["hive_id"], w["model_id"], w["slots_total"]) for w in listed["workers"]] == [
        ("w-1", "h1", "m", 2), (LONG, "h1", "m", 1)]  # fmt: skip


def test_hives_ls_json_is_the_queen_api(queen: QueenProc) -> None:
    listed = _json("hives", "ls", "--queen", queen.url)
    assert isinstance(listed, dict) and [h["hive_id"] for h in listed["hives"]] == ["h1"]
    hive = listed["hives"][0]
    assert hive["status"] == "online" and hive["models"] == ["m"] and hive["workers"] == 2
    assert hive["resources"]["ram_available_bytes"] == 8 << 30


def test_models_ls_json(queen: QueenProc) -> None:
    assert _json("models", "ls", "--queen", queen.url) == {"models": [{"id": "m", "hives": ["h1"], "workers": 2}]}


def test_ls_json_unreachable_queen_exits_1_with_nothing_on_stdout(free_port: int) -> None:
    done = rbee("workers", "ls", "--json", "--queen", f"http://127.0.0.1:{free_port}")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "QUEEN_UNREACHABLE" in done.stderr


def test_piped_table_keeps_whole_rows(queen: QueenProc) -> None:
    """Piped (not a terminal), a table is as wide as its rows: nothing cut at 80 columns, nothing wrapped."""
    done = rbee("workers", "ls", "--queen", queen.url)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if LONG in line)
    assert "w-1" in done.stdout and "http://127.0.0.1:1/" + LONG in row and len(row) > 300
    assert "…" not in done.stdout


def test_columns_still_sets_the_width(queen: QueenProc) -> None:
    """``COLUMNS`` set by the user wins, as in rich: the table fits in it (cells wrap)."""
    done = rbee("workers", "ls", "--queen", queen.url, columns=100)
    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 100 and LONG not in done.stdout


def test_piped_spec_summary_keeps_whole_rows(tmp_path: Path) -> None:
    address = "a" * 60 + "." + "b" * 60 + ".example"
    spec = tmp_path / "cluster.yaml"
    spec.write_text(f"cluster: wide\nhosts:\n  - {{name: box, address: {address}}}\n")
    done = rbee("spec", "validate", str(spec))
    assert done.returncode == 0, done.stderr
    assert any(address in line and line.startswith("│ box") for line in done.stdout.splitlines()), done.stdout
    assert "…" not in done.stdout and f"queen: http://{address}:7833/v1" in done.stdout


# --------------------------------------------------------------------------- spec validate --json


def test_validate_json_valid() -> None:
    assert _json("spec", "validate", EXAMPLE) == {"file": EXAMPLE, "valid": True, "errors": []}


def test_validate_json_lists_every_located_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: lab\nhosts:\n  - name: a\n    address: x\n    backend: gpu\n  - name: a\n    address: y\n")
    done = rbee("spec", "validate", "--json", str(bad))
    assert done.returncode == 2 and done.stderr == ""
    report = json.loads(done.stdout)
    assert report["valid"] is False and report["file"] == str(bad)
    first, second = report["errors"]
    assert first == {"loc": ["hosts", 0, "backend"], "path": "hosts[0].backend",
                     "msg": "must be one of auto, cpu, cuda, metal", "line": 5, "col": 14, "got": "'gpu'",
                     "hint": "did you mean 'cpu'?"}  # fmt: skip
    assert (second["loc"], second["line"], second["col"]) == (["hosts", 1, "name"], 6, 11)
    assert second["msg"].startswith("duplicate host name")


def test_validate_json_unreadable_file_exits_1(tmp_path: Path) -> None:
    done = rbee("spec", "validate", "--json", str(tmp_path / "nope.yaml"))
    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout)["errors"] == [
        {"loc": [], "path": "(file)", "msg": "cannot read the spec: No such file or directory"}
    ]


# --------------------------------------------------------------------------- testhosts ls --json


@pytest.mark.skipif(os.geteuid() != 0, reason="rbee testhosts needs root")
def test_testhosts_ls_json(tmp_path: Path) -> None:
    """A stopped host (its folder, no process): listed without booting anything."""
    (tmp_path / "hosts" / "h2").mkdir(parents=True)
    env = {**os.environ, "RBEE_TESTHOSTS_DIR": str(tmp_path)}
    expected = {"name": "h2", "address": "10.210.0.12", "release": "bookworm", "running": False, "ssh_ok": None}
    assert _json("testhosts", "ls", env=env) == {"hosts": [expected]}
    assert _json("testhosts", "status", env=env) == {"hosts": [expected]}
    (tmp_path / "hosts" / "h2").rmdir()
    assert _json("testhosts", "ls", env=env) == {"hosts": []}
