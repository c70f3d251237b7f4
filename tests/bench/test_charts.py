"""bench/charts.py on the committed results: every one draws as a PNG; a malformed one is named in one line.

matplotlib is imported here, not ``importorskip``-ed: without it (the ``dev`` extra has it) these tests fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from bench import charts

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DEPLOY_RESULTS = sorted(RESULTS.glob("deploy-*.json"))
PROXY_RESULTS = sorted(RESULTS.glob("proxy-*.json"))
LATEST_DEPLOY = DEPLOY_RESULTS[-1]
FINAL_PROXY = RESULTS / "proxy-20261202-b750e92-final.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MISSING = "needs matplotlib to draw its charts: pip install 'rbee[bench]' (or pip install matplotlib)"


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def assert_png(path: Path, min_width: int = 1000, min_height: int = 400) -> tuple[int, int]:
    """A PNG (signature, IHDR size), read back by matplotlib, of a chart's size, not blank; returns (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, data[:8]
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= min_width and height >= min_height, (width, height)
    assert 20_000 < len(data) < 2_000_000, len(data)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05  # bars and text, not one colour
    return width, height


def chart_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bench.charts ARGS`` from the repository root."""
    command = [sys.executable, "-m", "bench.charts", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_the_results_the_tests_read_are_there() -> None:
    assert len(DEPLOY_RESULTS) >= 1 and len(PROXY_RESULTS) >= 1 and FINAL_PROXY.exists()


@pytest.mark.parametrize("result", DEPLOY_RESULTS + PROXY_RESULTS, ids=lambda p: p.stem)
def test_every_committed_result_draws_as_a_png(result: Path, tmp_path: Path) -> None:
    png = charts.draw(read(result), tmp_path / "chart.png")
    assert png == tmp_path / "chart.png"
    assert_png(png)


def test_the_deploy_chart_has_a_panel_per_measured_kind(tmp_path: Path) -> None:
    document = read(LATEST_DEPLOY)
    assert document["model_copy"], "the latest deploy result has the model copy figures"
    _, with_copy = assert_png(charts.deploy_chart(document, tmp_path / "copy.png"))
    _, without = assert_png(charts.deploy_chart({**document, "model_copy": []}, tmp_path / "no-copy.png"))
    assert with_copy > without  # the copy panel is a second row


def test_per_round_samples_add_a_cdf_panel_per_workload(tmp_path: Path) -> None:
    document = read(FINAL_PROXY)
    _, plain = assert_png(charts.proxy_chart(document, tmp_path / "plain.png"))
    for data in document["workloads"].values():
        spread = [1 + i / 100 for i in range(50)]
        data["ttft_ms_samples"] = {mode: [f["ttft_ms_p50"] * s for s in spread] for mode, f in data["modes"].items()}
    _, sampled = assert_png(charts.proxy_chart(document, tmp_path / "sampled.png"))
    assert sampled > plain


def test_the_command_writes_each_png_beside_its_json(tmp_path: Path) -> None:
    copies = [tmp_path / LATEST_DEPLOY.name, tmp_path / FINAL_PROXY.name]
    for source, copy in zip([LATEST_DEPLOY, FINAL_PROXY], copies, strict=True):
        copy.write_bytes(source.read_bytes())
    done = chart_cli(*map(str, copies))
    assert done.returncode == 0, done.stderr
    for copy in copies:
        assert f"wrote {copy.with_suffix('.png')}" in done.stdout
        assert_png(copy.with_suffix(".png"))


MALFORMED = {
    "not-json": ("{", "not JSON"),
    "a-list": ("[1, 2]", "not a benchmark result: a JSON list, not an object"),
    "something-else": ('{"benchmark": "load"}', "not the result of a known benchmark"),
    "proxy-without-workloads": ('{"benchmark": "proxy"}', "a proxy result without its 'workloads' object"),
    "proxy-without-modes": ('{"benchmark": "proxy", "workloads": {"llama": {}}}', "proxy result (missing 'modes')"),
    "deploy-without-figures": ('{"sizes": [{"hosts": 1}]}', "malformed deploy result (missing "),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_result_is_named_in_one_line(name: str, tmp_path: Path) -> None:
    text, said = MALFORMED[name]
    bad = tmp_path / f"{name}.json"
    bad.write_text(text)
    good = tmp_path / LATEST_DEPLOY.name
    good.write_bytes(LATEST_DEPLOY.read_bytes())
    done = chart_cli(str(bad), str(good))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"python -m bench.charts: error: {bad}: ") and said in done.stderr, done.stderr
    assert not bad.with_suffix(".png").exists()
    assert_png(good.with_suffix(".png"))  # the others are still drawn


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(charts.ChartError, match="cannot read it"):
        charts.chart_file(tmp_path / "none.json")


@pytest.mark.parametrize(
    ("code", "prog"),
    [
        ("from bench.charts import main; sys.exit(main(['x.json']))", "python -m bench.charts"),
        ("from bench.proxy.cli import main; main(['--json', 'x.json'])", "python -m bench.proxy"),
        ("from bench.deploy import main; sys.argv = ['deploy.py']; main()", "python -m bench.deploy"),
    ],
    ids=["charts", "proxy", "deploy"],
)
def test_without_matplotlib_a_benchmark_says_so_in_one_line(code: str, prog: str, tmp_path: Path) -> None:
    """Before any work (the proxy and deploy benchmarks would start a cluster or test hosts first)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.modules['matplotlib'] = None; {code}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"{prog} {MISSING}\n"


def test_the_charts_the_readmes_show_are_committed() -> None:
    shown = []
    for readme in (ROOT / "README.md", ROOT / "bench" / "README.md"):
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme.read_text()):
            if "results/" in link:
                shown.append((readme.parent / link).resolve())
    assert len(shown) >= 3, shown
    for png in shown:
        assert png.with_suffix(".json").exists(), png
        assert_png(png)
