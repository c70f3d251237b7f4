"""Command line of ``python -m rbee_runtime.worker`` (started by a hive, see docs/api.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rbee_runtime.common.credentials import CredentialError, is_loopback, read_credential
from rbee_runtime.common.log_setup import LogFormatError, add_log_format_argument, configure_logging, log_format
from rbee_runtime.common.ports import WORKER_PORT_FIRST
from rbee_runtime.common.sd_notify import notifier
from rbee_runtime.common.tls import TlsError, load_tls
from rbee_runtime.worker.server import WorkerSettings, run


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def _gpu_layers(value: str) -> int | None:
    if value == "auto":
        return None
    number = int(value)
    if number < -1:
        raise argparse.ArgumentTypeError(f"must be auto, -1 (all) or >= 0, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rbee_runtime.worker", description="Serve one GGUF model.")
    p.add_argument("--worker-id", required=True)
    p.add_argument("--model-id", required=True)
    p.add_argument("--model-path", required=True, help="path of the .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=WORKER_PORT_FIRST)
    p.add_argument("--slots", type=_positive_int, default=1, help="concurrent generations")
    p.add_argument("--ctx-size", type=_positive_int, default=2048, help="context length per slot")
    p.add_argument("--backend", choices=["cpu", "cuda", "metal"], default="cpu")
    p.add_argument("--device", type=int, default=0, help="GPU index (cuda)")
    p.add_argument(
        "--n-gpu-layers",
        type=_gpu_layers,
        default=None,
        metavar="auto|N",
        help="layers offloaded to the GPU (cuda/metal): auto (default) = all when the model fits in the GPU's "
        "free VRAM, else as many as fit; -1 = all; 0 = none",
    )
    p.add_argument("--embedding", action="store_true",
                   help="serve embeddings (POST /v1/embeddings) instead of completions: the model is an embedding "
                   "model (mean pooling unless its GGUF names one)")
    p.add_argument("--callback-url", default=None, help="hive URL to POST WorkerReady to once loaded")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="llama.cpp's CPU threads (default: backend cpu on a host of at most 8 physical cores: "
                   "cores - 1, leaving one to HTTP; else llama-cpp-python's default)")
    p.add_argument("--grace-period", type=float, default=30.0, help="seconds a drain waits for running work")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_log_format_argument(p)
    p.add_argument(
        "--announce-interval",
        type=_non_negative_float,
        default=10.0,
        help="seconds between two ready callbacks for the worker's whole life, retried (back-off capped at "
        "this) while the hive is unreachable; 0 = one callback only (default 10)",
    )
    p.add_argument(
        "--managed-by",
        choices=["hive", "external"],
        default="hive",
        help="who owns this process: 'hive' (spawned by it) or 'external' (e.g. a systemd unit; the hive "
        "registers it on its callback and never stops it)",
    )
    p.add_argument(
        "--credential-file",
        default=None,
        help="file holding the workers' credential of the internal plane (required unless --host is loopback); "
        "$CREDENTIALS_DIRECTORY is systemd's LoadCredential= folder",
    )
    tls = "TLS (all three or none): serve HTTPS and check the hive against the cluster CA; "
    p.add_argument("--tls-cert-file", default=None, help=tls + "this host's certificate (PEM)")
    p.add_argument("--tls-key-file", default=None, help=tls + "its private key (PEM)")
    p.add_argument("--tls-ca-file", default=None, help=tls + "the cluster CA's certificate (PEM)")
    return p


def parse_settings(argv: Sequence[str] | None = None) -> WorkerSettings:
    parser = build_parser()
    a = parser.parse_args(argv)
    credential = None
    if a.credential_file is not None:
        try:
            credential = read_credential(a.credential_file, "--credential-file")
        except CredentialError as exc:
            parser.error(str(exc))
    elif not is_loopback(a.host):
        parser.error(f"--host {a.host} is reachable from other machines: give --credential-file")
    try:
        tls = load_tls(a.tls_cert_file, a.tls_key_file, a.tls_ca_file)
    except TlsError as exc:
        parser.error(str(exc).replace("tls_", "--tls-").replace("_file", "-file"))
    try:
        fmt = log_format(a.log_format)
    except LogFormatError as exc:
        parser.error(str(exc))
    return WorkerSettings(
        worker_id=a.worker_id,
        model_id=a.model_id,
        model_path=a.model_path,
        host=a.host,
        port=a.port,
        slots=a.slots,
        ctx_size=a.ctx_size,
        backend=a.backend,
        device=a.device,
        callback_url=a.callback_url,
        threads=a.threads,
        grace_period_s=a.grace_period,
        log_level=a.log_level,
        log_format=fmt,
        announce_interval_s=a.announce_interval,
        managed_by=a.managed_by,
        n_gpu_layers=a.n_gpu_layers,
        embedding=a.embedding,
        credential=credential,
        tls=tls,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, serve, and exit with the worker's status."""
    notifier()  # read (and take out of the environment) systemd's notify socket before anything else
    settings = parse_settings(argv)
    configure_logging(
        settings.log_level, settings.log_format, service="worker", label=f"worker[{settings.worker_id}] ",
        static={"worker": settings.worker_id, "model": settings.model_id},
    )  # fmt: skip
    if settings.log_level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per announce is noise
    sys.exit(run(settings))
