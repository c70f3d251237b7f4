"""The proxy benchmark end to end, as a user runs it: a few rounds, every headline figure in its JSON.

A smoke test, not a timing assertion: speed is measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.proxy import report
from bench.proxy.litellm_proxy import LITELLM_ENV, find_litellm

ROOT = Path(__file__).resolve().parents[2]
FALSE = shutil.which("false") or "/bin/false"


def bench(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m bench.proxy ARGS`` from the repository root."""
    return subprocess.run([sys.executable, "-m", "bench.proxy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)  # fmt: skip


def left_running(marker: str) -> list[str]:
    """Command lines of running processes that name ``marker`` (the run's own folder)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if marker in cmdline:
            found.append(cmdline)
    return found


@dataclass(frozen=True)
class QuickRun:
    result: dict[str, Any]
    stdout: str
    folder: Path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``--rounds 3`` on the canned worker paced at 50 µs a token, 2 streams; direct, queen, and a "LiteLLM"
    command that exits at once (``false``)."""
    folder = tmp_path_factory.mktemp("proxy-bench")
    env = {**os.environ, "RBEE_BENCH_LITELLM": FALSE}
    done = bench("--rounds", "3", "--warmup", "1", "--workloads", "canned", "--canned-pace-us", "50",
                 "--concurrency", "2", "--concurrency-requests", "2", "--keep", str(folder / "run"),
                 "--json", str(folder / "run.json"), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return QuickRun(json.loads((folder / "run.json").read_text()), done.stdout, folder)


@pytest.mark.engine
@pytest.mark.slow
class TestQuickRun:
    """One quick run (the local cluster places a llama.cpp worker, hence ``engine``)."""

    def test_every_headline_figure_is_in_the_json(self, quick: QuickRun) -> None:
        headline = quick.result["headline"]
        for mode in ("direct", "queen"):
            for key in report.MODE_KEYS:
                assert math.isfinite(headline[f"canned.{mode}.{key}"]), key
            assert headline[f"concurrency.{mode}.tokens_per_s"] > 0
            cpu = headline[f"concurrency.{mode}.cpu_us_per_token"]  # in clock ticks: 256 tokens may take less than 1
            assert math.isfinite(cpu) and cpu >= 0
        for key in report.PAIRED_KEYS:
            assert math.isfinite(headline[f"canned.queen.{key}"]), key
        queen = quick.result["workloads"]["canned"]["modes"]["queen"]
        assert queen["pairs"] == 3 and queen["samples"] == 3 and queen["token_mismatches"] == 0
        assert queen["tokens_p50"] == 64
        assert quick.result["concurrency"]["modes"]["queen"]["tokens"] == 2 * 2 * 64
        assert math.isfinite(queen["last_token_added_ms_p50"])
        assert "one token every 50 µs" in quick.result["workloads"]["canned"]["describe"]
        assert quick.result["params"]["rounds"] == 3 and quick.result["machine"]["cpus"] >= 1
        assert len(quick.result["git"]["commit"]) == 40

    def test_litellm_that_does_not_start_is_skipped_with_the_reason(self, quick: QuickRun) -> None:
        reason = quick.result["workloads"]["canned"]["skipped"]["litellm"]
        assert reason.startswith(f"LiteLLM's proxy ({FALSE} ($RBEE_BENCH_LITELLM)) did not start: ")
        assert "litellm proxy exited with status 1" in reason
        assert quick.result["concurrency"]["skipped"]["litellm"] == reason
        assert quick.result["litellm"] == {"used": False, "reason": reason}
        assert f"litellm  skipped: {reason}" in quick.stdout

    def test_the_table_is_printed_and_saved_beside_the_json(self, quick: QuickRun) -> None:
        saved = (quick.folder / "run.txt").read_text().strip()
        assert saved == report.render(quick.result).strip()
        assert saved in quick.stdout
        assert "[canned]" in saved and "[concurrency] 2 simultaneous streams" in saved

    def test_the_chart_is_drawn_beside_the_json(self, quick: QuickRun) -> None:
        chart = (quick.folder / "run.png").read_bytes()
        assert chart.startswith(b"\x89PNG\r\n\x1a\n") and len(chart) > 20_000
        samples = quick.result["workloads"]["canned"]["ttft_ms_samples"]  # the chart's CDF panel
        assert set(samples) == {"direct", "queen"} and all(len(v) == 3 and min(v) > 0 for v in samples.values())

    def test_nothing_is_left_running(self, quick: QuickRun) -> None:
        assert left_running(str(quick.folder / "run")) == []

    def test_compare_prints_the_ratio_of_each_headline(self, quick: QuickRun) -> None:
        older = json.loads(json.dumps(quick.result))
        older["workloads"]["canned"]["modes"]["queen"]["ttft_added_ms_p50"] *= 2
        rows = report.compare(quick.result, older).splitlines()
        changed = next(row for row in rows if "canned.queen.ttft_added_ms_p50" in row)
        assert changed.split()[-1] == "0.50"
        figures = [row for row in rows if row.strip().startswith(("canned.", "concurrency."))]
        assert len(figures) == len(report.headline(quick.result))
        for row in figures:
            key, old, _, ratio = row.split()
            if key != "canned.queen.ttft_added_ms_p50":
                assert ratio == "1.00" or (old == "0.00" and ratio == "-"), row  # no ratio to a zero


def test_a_litellm_command_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = str(tmp_path / "litellm")
    assert find_litellm(missing) == (None, f"--litellm names {missing}, which is not an executable file")
    monkeypatch.setenv(LITELLM_ENV, missing)
    assert find_litellm(None) == (None, f"${LITELLM_ENV} names {missing}, which is not an executable file")
    assert find_litellm(FALSE) == (FALSE, f"{FALSE} (--litellm)")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--compare", "/nonexistent/run.json"], "--compare /nonexistent/run.json: cannot read an earlier run"),
        (["--workloads", "llama,gpt"], "choose from llama, canned"),
        (["--rounds", "0"], "must be >= 1"),
        (["--concurrency", "-1"], "must be >= 0"),
        (["--canned-pace-us", "nan"], "must be >= 0"),
    ],
)
def test_wrong_options_are_usage_errors(args: list[str], said: str) -> None:
    done = bench(*args, timeout=30)
    assert done.returncode == 2 and said in done.stderr, done.stderr


def test_compare_refuses_the_json_of_something_else(tmp_path: Path) -> None:
    other = tmp_path / "deploy.json"
    other.write_text(json.dumps({"benchmark": "deploy"}))
    done = bench("--compare", str(other), timeout=30)
    assert done.returncode == 2 and "not the JSON of a proxy benchmark run" in done.stderr, done.stderr
