"""The benchmarks' figures as PNG charts: each measured figure beside the baseline measured in the same run.

``python -m bench.charts bench/results/X.json [...]`` (re)draws ``X.png`` beside each result, without running
anything; ``bench.deploy`` and ``bench.proxy`` draw theirs when they write their JSON. One function per benchmark:
:func:`deploy_chart` and :func:`proxy_chart`; :func:`draw` picks one from the result's shape. matplotlib (the
``bench`` and ``dev`` extras) is imported only to draw, with the Agg backend: no display is needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL = "pip install 'rbee[bench]'"
MISSING_DEPENDENCY = 2  # as ``rbee``'s commands (rbee.cli.exits): a usage error
DPI = 100

#: rbee's figures in amber, the in-run baselines in greys, other tools in blues.
RBEE = "#e8a200"
BASELINE = "#8c8c8c"
BASELINE_2 = "#c4c4c4"
OTHER = "#4a78b0"
OTHER_2 = "#9dbde0"
MODE_COLORS = {"direct": BASELINE, "queen": RBEE, "litellm": OTHER}
MODE_LABELS = {
    "direct": "direct to the worker (baseline)",
    "queen": "through the queen (rbee)",
    "litellm": "through LiteLLM's proxy",
}


class ChartError(Exception):
    """A result that cannot be charted: unreadable, not JSON, or not a complete result of a known benchmark."""


def require_matplotlib(prog: str) -> None:
    """Exit 2 with one line naming the extra when matplotlib cannot be imported (before a benchmark's minutes)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{prog} needs matplotlib to draw its charts: {INSTALL} (or pip install matplotlib)", file=sys.stderr)
        raise SystemExit(MISSING_DEPENDENCY) from None


@dataclass(frozen=True)
class Series:
    """One kind of bar in a grouped bar chart: a value per group (None: no bar), drawn in ``color``.

    ``upper``: the top of a whisker per group (a p95 over a p50 bar); ``points``: single runs drawn as dots on
    the bar (the bar being their best or median); ``notes``: the text above each bar (default: the value).
    """

    label: str
    values: Sequence[float | None]
    color: str
    upper: Sequence[float | None] | None = None
    points: Sequence[Sequence[float]] | None = None
    notes: Sequence[str | None] | None = None
    bold: bool = False


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, null, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return value / baseline if value is not None and baseline else None


def _fmt(value: float, unit: str = "") -> str:
    """A figure with 2 to 3 significant digits (``0.004``, ``1.59``, ``37.5``, ``113``, ``10455``)."""
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 0.1 else None
    text = f"{value:.{digits}f}" if digits is not None else f"{value:.1g}"
    return f"{text} {unit}".rstrip()


def _times(ratio: float) -> str:
    """A ratio after a multiplication sign: 2 decimals below 10 (0.75, 1.24), 1 above (12.4)."""
    return f"×{ratio:.1f}" if abs(ratio) >= 10 else f"×{ratio:.2f}"


def _per_host(calls: int) -> str:
    return f"{calls} call{'s' if calls != 1 else ''}/host"


def _against(
    values: Sequence[float | None],
    baselines: Sequence[float | None],
    unit: str,
    after: Sequence[str] | None = None,
    sep: str = " ",
) -> list[str | None]:
    """Each value's label with its ratio to its baseline (``1.59 s`` then the ratio), then ``after``; None where
    there is no ratio (the bar gets its plain value)."""
    notes: list[str | None] = []
    for i, (value, baseline) in enumerate(zip(values, baselines, strict=True)):
        ratio = _ratio(value, baseline)
        tail = after[i] if after else ""
        notes.append(None if value is None or ratio is None else f"{_fmt(value, unit)}{sep}{_times(ratio)}{tail}")
    return notes


def _grouped_bars(
    ax: Axes, groups: Sequence[str], series: Sequence[Series], unit: str, log: bool = False, axis: str | None = None
) -> None:
    """Bars per group, one per series (a series without a value in a group leaves no gap), each labelled with its
    note or its value and ``unit``; ``axis``: the y axis' label (default ``unit``)."""
    width = 0.8 / max(len(series), 1)
    drawn: set[str] = set()
    for g, _group in enumerate(groups):
        present = [s for s in series if s.values[g] is not None]
        for i, s in enumerate(present):
            value = s.values[g]
            assert value is not None
            x = g + (i - (len(present) - 1) / 2) * width
            label = s.label if s.label not in drawn else None
            drawn.add(s.label)
            ax.bar(x, value, width * 0.92, color=s.color, label=label, edgecolor="#333333", linewidth=0.4)
            top = value
            upper = s.upper[g] if s.upper else None
            if upper is not None and upper > value:
                ax.plot([x, x], [value, upper], color="#333333", linewidth=1)
                ax.plot([x - width * 0.15, x + width * 0.15], [upper, upper], color="#333333", linewidth=1)
                top = upper
            for point in s.points[g] if s.points else ():
                ax.plot(x, point, marker="o", markersize=3.5, color="#222222", zorder=3)
                top = max(top, point)
            note = s.notes[g] if s.notes else None
            text = note if note is not None else _fmt(value, unit)
            ax.annotate(
                text,
                (x, max(top, 0.0) if not log else top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7.5,
                fontweight="bold" if s.bold else "normal",
            )
    ax.set_xticks(range(len(groups)), list(groups))
    if log:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 4)  # room for the labels
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))  # 10, 100: not 10^1, 10^2
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.0), high * 1.25)
        ax.axhline(0, color="#333333", linewidth=0.6)
    ax.set_ylabel(axis or unit)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7.5, loc="upper left", frameon=False)


def _new_figure(panels: int, columns: int, title: str) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` axes on a grid ``columns`` wide (an odd last one left empty), without a display."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(6.4 * columns, 4.4 * rows + 0.6), dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=10)
    return figure, axes[:panels]


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def _hosts(n: int) -> str:
    return f"{n} host{'s' if n != 1 else ''}"


def deploy_chart(result: dict[str, Any], path: Path) -> Path:
    """``bench.deploy``'s figures as a PNG at ``path``: per host count, rbee's no-op and first deploy against the
    bare 12-operation pyinfra deploy of the same run (ratio over rbee's bar, remote calls per host), the model copy
    against plain ``scp`` (its best of 2; each run a dot) and paramiko's SFTP, the large model's no-op against the
    tiny one's. Panels whose figures the run did not measure are left out."""
    sizes: list[dict[str, Any]] = result["sizes"]
    if not sizes:
        raise ChartError("no host count measured (empty 'sizes')")
    copies: list[dict[str, Any]] = result.get("model_copy") or []
    large: dict[str, Any] | None = result.get("large_model")
    ansible: dict[str, Any] = {str(k): v for k, v in (result.get("ansible_noop_s") or {}).items()}
    groups = [_hosts(s["hosts"]) for s in sizes]
    panels = 2 + bool(copies) + bool(large)
    cores = result.get("cores")
    title = (
        f"bench.deploy at {result.get('commit', '?')} ({result.get('date', '?')}"
        f"{f', {cores} cores' if cores else ''}): rbee against baselines measured in the same run"
    )
    figure, axes = _new_figure(panels, 2, title)

    def calls(row: dict[str, Any], key: str) -> str:
        """The most remote calls a host got, as a second line (none when not counted: 0)."""
        most = max(row[key].values(), default=0)
        return f"\n{_per_host(most)}" if most else ""

    noop = [_number(s["noop_s"]) for s in sizes]
    bare_noop = [_number(s["bare_noop_s"]) for s in sizes]
    noop_series = [
        Series(
            "rbee no-op re-run",
            noop,
            RBEE,
            bold=True,
            points=[s.get("noop_runs_s") or [] for s in sizes],
            notes=_against(noop, bare_noop, "s", [calls(s, "noop_calls_per_host") for s in sizes]),
        ),
        Series(
            "bare pyinfra no-op, 12 operations (baseline)",
            bare_noop,
            BASELINE,
            notes=[
                f"{_fmt(v, 's')}{calls(s, 'bare_noop_calls_per_host')}" if v else None
                for v, s in zip(bare_noop, sizes, strict=True)
            ],
        ),
    ]
    if ansible:
        noop_series.append(Series("ansible no-op", [_number(ansible.get(str(s["hosts"]))) for s in sizes], OTHER))
    _grouped_bars(axes[0], groups, noop_series, "s")
    axes[0].set_title("No-op deploy (median; ×: rbee / bare pyinfra)", fontsize=9)

    first = [_number(s["first_deploy_s"]) for s in sizes]
    bare_first = [_number(s["bare_first_s"]) for s in sizes]
    _grouped_bars(
        axes[1],
        groups,
        [
            Series(
                "rbee first deploy (bare Debian → serving)",
                first,
                RBEE,
                bold=True,
                notes=_against(first, bare_first, "s", [calls(s, "first_deploy_calls_per_host") for s in sizes]),
            ),
            Series("bare pyinfra first deploy, 12 operations (baseline)", bare_first, BASELINE),
        ],
        "s",
    )
    axes[1].set_title("First deploy (engine build excluded; ×: rbee / bare pyinfra)", fontsize=9)

    panel = 2
    if copies:
        mib = copies[0]["file_mib"]
        rbee = [_number(c["rbee_copy_s"]) for c in copies]
        scp = [_number(c["scp_s"]) for c in copies]
        copy_series = [
            Series(
                "rbee: the deploy's copy step (hash, fsync, rename, stamp)",
                rbee,
                RBEE,
                bold=True,
                notes=_against(rbee, scp, "s", [" scp"] * len(copies), sep="\n"),
            ),
            Series(
                "plain scp in parallel (best of 2: bar; each run: dot)",
                scp,
                BASELINE,
                points=[(c.get("plain_runs_s") or {}).get("scp") or [] for c in copies],
            ),
        ]
        if any(c.get("rsync_s") is not None for c in copies):
            copy_series.append(Series("rsync (best of 2)", [_number(c.get("rsync_s")) for c in copies], BASELINE_2))
        copy_series.append(Series("paramiko SFTP alone", [_number(c.get("paramiko_sftp_s")) for c in copies], OTHER))
        _grouped_bars(axes[panel], [_hosts(c["hosts"]) for c in copies], copy_series, "s")
        axes[panel].set_title(f"Model copy: {mib} MiB to every host (×: rbee / scp)", fontsize=9)
        panel += 1
    if large:
        big, tiny = _number(large["noop_s"]), _number(large["tiny_noop_s"])
        _grouped_bars(
            axes[panel],
            [_hosts(large["hosts"])],
            [
                Series(
                    f"no-op with a {large['model_mib']} MiB model",
                    [big],
                    RBEE,
                    bold=True,
                    notes=_against([big], [tiny], "s"),
                ),
                Series("no-op with the tiny model (baseline)", [tiny], BASELINE),
            ],
            "s",
        )
        axes[panel].set_title("A large model's no-op (nothing re-hashed; ×: large / tiny)", fontsize=9)
    return _save(figure, path)


@dataclass(frozen=True)
class _ProxyRun:
    """A proxy result as the panels read it: the workloads in order, their labels, the modes, the load test."""

    result: dict[str, Any]

    @property
    def workloads(self) -> dict[str, Any]:
        workloads: dict[str, Any] = self.result["workloads"]
        return workloads

    @property
    def names(self) -> list[str]:
        return list(self.workloads)

    @property
    def groups(self) -> list[str]:
        """A label per workload (the canned worker's pace, when paced)."""
        pace = _number((self.result.get("params") or {}).get("canned_pace_us"))
        labels = {"llama": "llama.cpp worker", "canned": "canned-token worker"}
        return [labels.get(n, n) + (f",\n1 token / {pace:g} µs" if n == "canned" and pace else "") for n in self.names]

    @property
    def modes(self) -> list[str]:
        """Every mode measured in some workload: direct, queen, litellm first."""
        seen = {mode for data in self.workloads.values() for mode in data["modes"]}
        return [m for m in MODE_COLORS if m in seen] + sorted(seen - set(MODE_COLORS))

    @property
    def load(self) -> dict[str, Any]:
        load: dict[str, Any] = self.result.get("concurrency") or {}
        return load

    @property
    def load_modes(self) -> dict[str, Any]:
        modes: dict[str, Any] = self.load.get("modes") or {}
        return modes

    def figure(self, mode: str, key: str) -> list[float | None]:
        """``key`` of ``mode`` in each workload (None where the mode or the figure is missing)."""
        return [_number(self.workloads[n]["modes"].get(mode, {}).get(key)) for n in self.names]

    def title(self) -> str:
        params: dict[str, Any] = self.result.get("params") or {}
        git: dict[str, Any] = self.result.get("git") or {}
        machine: dict[str, Any] = self.result.get("machine") or {}
        load_avg = _number((machine.get("loadavg_at_start") or [None])[0])
        api = "/v1/chat/completions" if params.get("api") == "chat" else "/v1/completions"
        litellm: dict[str, Any] = self.result.get("litellm") or {}
        skipped = "; LiteLLM skipped" if "litellm" not in self.modes and litellm.get("used") is False else ""
        return (
            f"bench.proxy at {str(git.get('commit', '?'))[:7]}{' (dirty)' if git.get('dirty') else ''}, "
            f"{self.result.get('started_at', '?')}: {params.get('rounds', '?')} paired rounds, "
            f"{params.get('max_tokens', '?')} tokens, {api}; {machine.get('cpus', '?')} CPUs"
            f"{f', load {load_avg:.1f} at start' if load_avg is not None else ''}\n"
            "the same request, in the same rounds: " + ", ".join(MODE_LABELS.get(m, m) for m in self.modes) + skipped
        )


def _mode_series(mode: str, values: Sequence[float | None], **kwargs: Any) -> Series:
    """A mode's bars in its colour, rbee's (the queen's) labels in bold."""
    return Series(MODE_LABELS.get(mode, mode), values, MODE_COLORS.get(mode, OTHER_2), bold=mode == "queen", **kwargs)


def _ttft_panel(ax: Axes, run: _ProxyRun) -> None:
    """Each mode's first-token p50 (p95 whisker); over a proxy's bar, what it adds to the same round's direct call
    (paired p50) and its p50 ratio to direct's."""
    series = []
    for mode in run.modes:
        p50 = run.figure(mode, "ttft_ms_p50")
        notes: list[str | None] = [None] * len(p50)
        if mode != "direct":
            added, ratio = run.figure(mode, "ttft_added_ms_p50"), run.figure(mode, "ttft_ratio")
            notes = [
                f"{a:+.1f} ms\n{_times(r)}" if a is not None and r is not None else None
                for a, r in zip(added, ratio, strict=True)
            ]
        series.append(_mode_series(mode, p50, upper=run.figure(mode, "ttft_ms_p95"), notes=notes))
    _grouped_bars(ax, run.groups, series, "ms", log=True)
    ax.set_title(
        "First token: p50 (bar), p95 (whisker); added vs direct in the same round (p50), ×: p50 ratio", fontsize=9
    )


def _per_token_panel(ax: Axes, run: _ProxyRun) -> None:
    """What each proxy adds per streamed token, paired with direct (p50, p95 whisker), and its decode-rate ratio."""
    series = []
    for mode in (m for m in run.modes if m != "direct"):
        p50, rate = run.figure(mode, "per_token_added_us_p50"), run.figure(mode, "decode_rate_ratio")
        notes = [
            None if v is None else f"{v:+.1f} µs" + (f"\ndecode {_times(r)}" if r is not None else "")
            for v, r in zip(p50, rate, strict=True)
        ]
        series.append(_mode_series(mode, p50, upper=run.figure(mode, "per_token_added_us_p95"), notes=notes))
    _grouped_bars(ax, run.groups, series, "µs per token")
    ax.set_title("Time added per token, paired with direct: p50 (bar), p95 (whisker); decode-rate ratio", fontsize=9)


def _cpu_panel(ax: Axes, run: _ProxyRun) -> None:
    """The proxies' CPU per token in the paired rounds of each workload and under the load test (there also the
    canned worker's own, for scale)."""
    groups = [*run.groups, *([f"{run.load.get('streams')} streams\n(load test)"] if run.load_modes else [])]
    series = []
    for mode in run.modes:
        paired = run.figure(mode, "cpu_us_per_token") if mode != "direct" else [None] * len(run.names)
        loaded = [_number(run.load_modes.get(mode, {}).get("cpu_us_per_token"))] if run.load_modes else []
        values = [*paired, *loaded]
        if any(v is not None for v in values):
            series.append(_mode_series(mode, values))
    if any(s.label == MODE_LABELS["direct"] for s in series):
        series = [
            Series("the canned worker itself (load test)", s.values, s.color) if s.label == MODE_LABELS["direct"] else s
            for s in series
        ]
    _grouped_bars(ax, groups, series, "µs", log=True, axis="CPU µs per token")
    ax.set_title("CPU time of the proxy's process per token delivered (log scale)", fontsize=9)


def _load_panel(ax: Axes, run: _ProxyRun) -> None:
    """Tokens per second of the load test's streams through each mode, with the ratio to direct."""
    direct = _number(run.load_modes.get("direct", {}).get("tokens_per_s"))
    series = []
    for mode in [m for m in run.modes if m in run.load_modes] + sorted(set(run.load_modes) - set(run.modes)):
        value = _number(run.load_modes[mode].get("tokens_per_s"))
        ratio = _ratio(value, direct) if mode != "direct" else None
        note = f"{_fmt(value)}\n{_times(ratio)}" if value is not None and ratio is not None else None
        series.append(_mode_series(mode, [value], notes=[note]))
    group = f"{run.load.get('streams')} streams × {run.load.get('requests_per_stream', '?')} requests each"
    _grouped_bars(ax, [group], series, "tokens/s")
    ax.set_title("Load test on the canned worker: tokens/s (×: vs direct)", fontsize=9)


def _cdf_panel(ax: Axes, run: _ProxyRun, name: str, label: str) -> None:
    """Every round's first-token time of each mode in workload ``name``, as a CDF (log scale)."""
    for mode, values in run.workloads[name]["ttft_ms_samples"].items():
        ordered = sorted(n for n in (_number(v) for v in values) if n is not None and n > 0)
        if ordered:
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, fractions, where="post", color=MODE_COLORS.get(mode, OTHER_2), linewidth=1.5,
                    label=MODE_LABELS.get(mode, mode))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("first token, ms (log scale)")
    ax.set_ylabel("fraction of rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right", frameon=False)
    ax.set_title(f"First token, every round (CDF): {label.replace(chr(10), ' ')}", fontsize=9)


def proxy_chart(result: dict[str, Any], path: Path) -> Path:
    """``bench.proxy``'s figures as a PNG at ``path``, each mode against ``direct`` (the worker itself, in the same
    rounds): per workload the first-token time (p50 bar, p95 whisker; what the proxy adds in the same round and the
    ratio), the time each proxy adds per token (paired), the proxies' CPU per token, the load test's tokens/s, and,
    with per-round samples in the JSON (``ttft_ms_samples``, runs from this chart's commit on), the first-token
    time's distribution (CDF)."""
    run = _ProxyRun(result)
    if not run.workloads:
        raise ChartError("no workload measured (empty 'workloads')")
    sampled = [(n, g) for n, g in zip(run.names, run.groups, strict=True) if run.workloads[n].get("ttft_ms_samples")]
    figure, axes = _new_figure(3 + bool(run.load_modes) + len(sampled), 2, run.title())
    _ttft_panel(axes[0], run)
    _per_token_panel(axes[1], run)
    _cpu_panel(axes[2], run)
    rest = iter(axes[3:])
    if run.load_modes:
        _load_panel(next(rest), run)
    for (name, label), ax in zip(sampled, rest, strict=True):
        _cdf_panel(ax, run, name, label)
    return _save(figure, path)


def kind_of(result: Any) -> str:
    """``"proxy"`` or ``"deploy"``: which benchmark wrote ``result``; ChartError when none did."""
    if not isinstance(result, dict):
        raise ChartError(f"not a benchmark result: a JSON {type(result).__name__}, not an object")
    if result.get("benchmark") == "proxy":
        if not isinstance(result.get("workloads"), dict):
            raise ChartError("a proxy result without its 'workloads' object")
        return "proxy"
    if result.get("benchmark") in (None, "deploy") and "sizes" in result:  # deploy results before 'benchmark'
        if not isinstance(result["sizes"], list):
            raise ChartError("a deploy result whose 'sizes' is not a list")
        return "deploy"
    raise ChartError("not the result of a known benchmark (bench.deploy: 'sizes'; bench.proxy: 'benchmark': 'proxy')")


def draw(result: Any, path: Path) -> Path:
    """The chart of ``result`` (any benchmark's) at ``path``; ChartError when it is not a complete result."""
    kind = kind_of(result)
    chart = proxy_chart if kind == "proxy" else deploy_chart
    try:
        return chart(result, path)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise ChartError(f"an incomplete or malformed {kind} result ({what})") from exc


def load_result(path: Path) -> Any:
    """The JSON document at ``path``; ChartError when it cannot be read or is not JSON."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ChartError(f"cannot read it ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise ChartError(f"not JSON ({exc})") from exc


def chart_file(path: Path, png: Path | None = None) -> Path:
    """Draw the result at ``path`` as ``png`` (default: beside it, ``.png``); returns the PNG's path."""
    return draw(load_result(path), png or path.with_suffix(".png"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.charts RESULT.json [...]``: write each one's PNG beside it; exit 1 when one failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.charts",
        description="(Re)draw the PNG chart of benchmark results (bench/results/*.json) beside each, without "
        "rerunning the benchmark.",
    )
    parser.add_argument("results", nargs="+", type=Path, help="JSON written by bench.deploy or bench.proxy")
    args = parser.parse_args(argv)
    require_matplotlib(parser.prog)
    status = 0
    for path in args.results:
        try:
            print(f"wrote {chart_file(path)}")
        except ChartError as exc:
            print(f"{parser.prog}: error: {path}: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
