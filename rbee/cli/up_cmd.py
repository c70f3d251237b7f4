"""``rbee up``: run a cluster on this machine in the foreground until Ctrl+C."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from rbee.cli import exits
from rbee.cli.extras import ENGINE, require
from rbee.cli.spec_cmd import read_spec_or_exit
from rbee.local.plan import LocalPlanError, default_spec, plan_local
from rbee.local.processes import wait_for_exit
from rbee.local.runner import LocalCluster, LocalClusterError
from rbee.spec.keys import ApiKeysError, first_api_key
from rbee.tiny_model import TINY_MODEL_ID, ensure_tiny_model
from rbee_runtime.common.ports import HIVE_PORT, QUEEN_PORT

RUN_ROOT = Path("~/.cache/rbee/run")


def _sigterm_as_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def up(
    spec: Annotated[
        Path | None, typer.Option(help="Run the local part of this spec (default: one node, the tiny model).")
    ] = None,
    queen_port: Annotated[int, typer.Option(help="Queen port of the embedded default.")] = QUEEN_PORT,
    hive_port: Annotated[int, typer.Option(help="Hive port of the embedded default.")] = HIVE_PORT,
    run_dir: Annotated[
        Path | None, typer.Option(help="Configs, data and logs (default ~/.cache/rbee/run/NAME).")
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait until the cluster serves.")] = 120.0,
) -> None:
    """Start a queen, a hive and the placed workers here, in the foreground; Ctrl+C stops them all."""
    require("up", ENGINE)
    if spec is None:
        cluster_spec = default_spec(ensure_tiny_model(), queen_port, hive_port)
        base_dir = Path.cwd()
    else:
        cluster_spec = read_spec_or_exit(spec)
        base_dir = spec.resolve().parent
    folder = (run_dir or RUN_ROOT / cluster_spec.cluster).expanduser().resolve()
    try:
        plan = plan_local(cluster_spec, base_dir, folder)
        api_key = first_api_key(cluster_spec, base_dir)
    except (LocalPlanError, ApiKeysError) as exc:
        typer.echo(f"rbee up: {exc}", err=True)
        raise typer.Exit(exits.FAILURE) from None
    cluster = LocalCluster(plan, folder / "logs", api_key)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    typer.echo(f"rbee up: cluster {cluster_spec.cluster}, files in {folder}")
    code = exits.OK
    try:
        cluster.start()
        for process in cluster.processes:
            typer.echo(f"  {process.service.name:<12} {process.service.url}  (log: {process.log_path})")
        ready = cluster.wait_ready(ready_timeout)
        for worker_id, model_id in ready.workers:
            typer.echo(f"  worker       {worker_id} serves {model_id}")
        _print_ready(plan.queen_url or "", cluster_spec.models[0].id if cluster_spec.models else TINY_MODEL_ID)
        if plan.ca_file:  # deploy.tls: clients need this run's CA
            ca = plan.ca_file
            typer.echo(f"  TLS: trust {ca} (export RBEE_CA_FILE={ca}; curl --cacert {ca})")
        if api_key is not None:
            typer.echo("  the API requires a key: export RBEE_API_KEY=<one of the queen's keys> for rbee commands")
        gone = wait_for_exit(cluster.processes)
        typer.echo(f"rbee up: {gone.service.name} stopped (status {gone.exit_code()}):\n{gone.log_tail()}", err=True)
        code = exits.FAILURE
    except LocalClusterError as exc:
        typer.echo(f"rbee up: {exc}", err=True)
        code = exits.FAILURE
    except KeyboardInterrupt:
        typer.echo("\nrbee up: stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl+C must not abandon the children
            signal.signal(signum, signal.SIG_IGN)
        for problem in cluster.stop():
            typer.echo(f"rbee up: warning: {problem}", err=True)
        typer.echo("rbee up: stopped; nothing left running")
    raise typer.Exit(code)


def _print_ready(queen_url: str, model: str) -> None:
    typer.echo(f"\nready: OpenAI-compatible API at {queen_url}/v1 (Ctrl+C stops everything)")
    typer.echo(f"  rbee infer --model {model} --prompt 'Hello'")
    typer.echo(
        f"  curl {queen_url}/v1/chat/completions -H 'content-type: application/json' "
        f"""-d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'"""
    )
