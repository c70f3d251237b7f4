"""Commands that talk to a running queen: ``infer`` and the ``ls`` views of its registries."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from rbee.cli import exits
from rbee.cli.output import print_json, stdout_console
from rbee.client import QueenClient, QueenError
from rbee_runtime.common.contracts import GpuInfo

QueenUrl = Annotated[
    str | None,
    typer.Option("--queen", envvar="RBEE_QUEEN_URL", show_envvar=True, help="Queen URL (default: the local queen)."),
]
ApiKey = Annotated[
    Path | None,
    typer.Option(
        "--api-key-file",
        help="File holding the API key (default $RBEE_API_KEY). A file, never the key itself: argv is public.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (the queen API's objects) instead of a table.")]


def _key(path: Path | None) -> str | None:
    """The API key in ``path`` (its first line that is not a comment); None: ``$RBEE_API_KEY``."""
    if path is None:
        return None
    try:
        lines = path.expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        typer.echo(f"error: --api-key-file {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.FAILURE) from exc
    key = next((line.strip() for line in lines if line.strip() and not line.strip().startswith("#")), "")
    if not key:
        typer.echo(f"error: --api-key-file {path} holds no key", err=True)
        raise typer.Exit(exits.FAILURE)
    return key


def _fail(exc: QueenError) -> typer.Exit:
    typer.echo(f"error: {exc} [{exc.code}]", err=True)
    return typer.Exit(exits.FAILURE)


def infer(
    model: Annotated[str, typer.Option("--model", "-m", help="Model id, as in `rbee models ls`.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to complete.")],
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    queen: QueenUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Stream a completion to the terminal; Ctrl+C cancels it on the worker (exit 130)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    with QueenClient(queen, _key(api_key)) as client:
        try:
            stream = client.stream_completion(model, prompt, max_tokens, temperature)
        except QueenError as exc:
            raise _fail(exc) from None
        try:
            for piece in stream.pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except QueenError as exc:
            sys.stdout.write("\n")
            raise _fail(exc) from None
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            typer.echo(f"cancelling request {stream.request_id} ...", err=True)
            try:
                client.cancel(stream.request_id)
                typer.echo("cancelled; the worker stopped generating", err=True)
            except QueenError as exc:
                typer.echo(f"could not cancel: {exc}", err=True)
            raise typer.Exit(exits.INTERRUPTED) from None
        sys.stdout.write("\n")


T = TypeVar("T")


def _ask(queen: str | None, api_key: Path | None, call: Callable[[QueenClient], T]) -> T:
    """One question to the queen; a failure is printed and exits 1."""
    with QueenClient(queen, _key(api_key)) as client:
        try:
            return call(client)
        except QueenError as exc:
            raise _fail(exc) from None


workers_app = typer.Typer(help="Workers the queen knows.", no_args_is_help=True)
hives_app = typer.Typer(help="Hives the queen knows.", no_args_is_help=True)
models_app = typer.Typer(help="Models the cluster can serve.", no_args_is_help=True)


@workers_app.command("ls")
def workers_ls(queen: QueenUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List workers: state, model, hive, slots and requests in flight.

    --json: {"workers": [...]}, each as GET /v1/workers on the queen gives it.
    """
    workers = sorted(_ask(queen, api_key, lambda client: client.workers()),
                     key=lambda w: (w.hive_id, w.model_id, w.worker_id))  # fmt: skip
    if as_json:
        print_json({"workers": [w.model_dump(mode="json") for w in workers]})
        return
    table = Table(title=f"{len(workers)} worker(s)", title_justify="left")
    for column in ("worker", "model", "hive", "state", "slots", "in flight", "url", "restarts"):
        table.add_column(column)
    for w in workers:
        state = w.state.value if w.status == "online" else f"{w.state.value} (hive stale)"
        table.add_row(
            w.worker_id, w.model_id, w.hive_id, state, str(w.slots_total), str(w.in_flight), w.url, str(w.restarts)
        )
    stdout_console().print(table)


def gpu_line(gpu: GpuInfo) -> str:
    """One GPU of a hive: ``GPU 0 NVIDIA GeForce RTX 4090: 22.5/24.0 GiB free, 45 °C`` (``?`` where unknown)."""
    if gpu.memory_total_bytes:
        memory = f"{gpu.memory_free_bytes / 2**30:.1f}/{gpu.memory_total_bytes / 2**30:.1f} GiB free"
    else:
        memory = "memory ?"
    temperature = f"{gpu.temperature_c} °C" if gpu.temperature_c is not None else "? °C"
    return f"GPU {gpu.index} {gpu.name}{' (MIG)' if gpu.mig else ''}: {memory}, {temperature}"


@hives_app.command("ls")
def hives_ls(queen: QueenUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List hives: status, last heartbeat, backends, free RAM, GPUs (free memory, temperature), workers, models.

    --json: {"hives": [...]}, each as GET /v1/hives on the queen gives it.
    """
    hives = sorted(_ask(queen, api_key, lambda client: client.hives()), key=lambda h: h.hive_id)
    if as_json:
        print_json({"hives": [h.model_dump(mode="json") for h in hives]})
        return
    out = stdout_console()
    table = Table(title=f"{len(hives)} hive(s)", title_justify="left")
    for column in ("hive", "status", "heartbeat", "backends", "RAM free", "GPUs", "workers", "models", "url"):
        table.add_column(column)
    for h in hives:
        ram = f"{h.resources.ram_available_bytes / 2**30:.1f} GiB"
        table.add_row(
            h.hive_id, h.status, f"{h.last_heartbeat_age_s:.1f}s ago", ",".join(h.backends), ram,
            str(len(h.resources.gpus)), f"{h.workers}/{h.max_workers}", ",".join(h.models), h.url,
        )  # fmt: skip
    out.print(table)
    for h in hives:  # one line per GPU, under the table
        for gpu in sorted(h.resources.gpus, key=lambda g: g.index):
            out.print(f"{h.hive_id}  {gpu_line(gpu)}", soft_wrap=True)


@models_app.command("ls")
def models_ls(queen: QueenUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List the models that some online hive holds, and where.

    --json: {"models": [{"id": model, "hives": [...], "workers": count}]}.
    """
    with QueenClient(queen, _key(api_key)) as client:
        try:
            models = client.models()
            hives = client.hives()
            workers = client.workers()
        except QueenError as exc:
            raise _fail(exc) from None
    rows = [(model, sorted(h.hive_id for h in hives if model in h.models), sum(w.model_id == model for w in workers))
            for model in sorted(models)]  # fmt: skip
    if as_json:
        print_json({"models": [{"id": model, "hives": on, "workers": running} for model, on, running in rows]})
        return
    table = Table(title=f"{len(models)} model(s)", title_justify="left")
    for column in ("model", "on hives", "workers"):
        table.add_column(column)
    for model, on, running in rows:
        table.add_row(model, ",".join(on), str(running))
    stdout_console().print(table)
