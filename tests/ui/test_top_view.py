"""``rbee top``'s frame from a given state: GPUs, CPU-only hosts, stale hives, crashed workers, errors."""

from __future__ import annotations

from rich.console import Console

from rbee.cli.top_view import duration, frame, latency
from rbee_runtime.common.contracts import GpuInfo
from rbee_runtime.queen.dashboard.schema import DashboardState, ErrorView, HostView, ModelView, Rates, WorkerView


def _host(hive_id: str, gpus: list[GpuInfo], status: str = "online") -> HostView:
    return HostView.model_validate({
        "hive_id": hive_id, "host": f"{hive_id}.lan", "status": status, "version": "0.1.0",
        "last_heartbeat_age_s": 0.4, "backends": ["cpu"], "cpu_count": 8, "ram_total_bytes": 64 << 30,
        "ram_available_bytes": 32 << 30, "gpus": gpus, "workers": 1, "max_workers": 4,
    })  # fmt: skip


def render(state: DashboardState) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(frame(state, "http://queen:7833", "q quits"))
    return console.export_text()


def test_the_frame_joins_hosts_gpus_workers_models_and_errors() -> None:
    gpu = GpuInfo(index=0, name="RTX 4090", memory_total_bytes=24 << 30, memory_free_bytes=20 << 30, temperature_c=51)
    crashed = WorkerView(worker_id="w2", hive_id="cpu-box", model_id="m", backend="cpu", device=0, state="crashed",
                         status="stale", routable=False, slots_busy=0, slots_total=1, uptime_s=None, restarts=3,
                         last_error="worker process was killed by SIGKILL\n--- log ---")  # fmt: skip
    busy = WorkerView(worker_id="w1", hive_id="gpu-box", model_id="m", backend="cuda", device=0, state="busy",
                      status="online", routable=True, slots_busy=2, slots_total=4, uptime_s=3725,
                      restarts=0)  # fmt: skip
    state = DashboardState(
        queen_id="q", version="0.1.0", now=1_700_000_000, api_keys=True,
        hosts=[_host("gpu-box", [gpu]), _host("cpu-box", [], status="stale")], workers=[busy, crashed],
        models=[ModelView(model_id="m", workers=1, slots_busy=2, slots_total=4, queued=3, tokens_per_s=41.5,
                          requests_per_s=0.5, ttft_avg_s=0.12)],
        rates=Rates(window_s=60, tokens_per_s=41.5, requests_per_s=0.5, errors=1, ttft_window_s=300,
                    ttft_p50_s=0.1, ttft_p95_s=1.5, step_s=5),
        errors=[ErrorView(at=1_700_000_000, source="worker", message="worker w2 (m) on cpu-box crashed: killed")],
    )  # fmt: skip
    text = render(state)
    assert "GPU 0 RTX 4090: 20.0/24.0 GiB free, 51 °C" in text and "CPU only" in text, text
    assert "cuda:0" in text and "2/4" in text and "1h 02m" in text, text
    assert "crashed (hive stale)" in text and "worker process was killed by SIGKILL" in text and "--- log" not in text
    assert "41.5 tokens/s" in text and "p50 100 ms p95 1.50 s" in text, text
    assert "worker w2 (m) on cpu-box crashed: killed" in text and "q quits" in text, text


def test_units() -> None:
    assert [duration(s) for s in (None, 5, 65, 3725, 90000)] == ["-", "5s", "1m 05s", "1h 02m", "1d 1h"]
    assert [latency(s) for s in (None, 0.0381, 2.5)] == ["-", "38 ms", "2.50 s"]
