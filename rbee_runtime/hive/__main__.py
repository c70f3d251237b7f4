"""``python -m rbee_runtime.hive --config hive.yaml``: run one hive (SIGTERM stops its workers, then exits)."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn
from pydantic import ValidationError

from rbee_runtime.common.serving import fast_server_options
from rbee_runtime.hive.app import create_app
from rbee_runtime.hive.config import load_hive_config
from rbee_runtime.hive.service import DataDirInUseError


def _quiet_announces(record: logging.LogRecord) -> bool:
    """Access-log filter: drop the accepted ``POST /v1/workers/ready`` lines (workers repeat them)."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 5:
        _client, method, path, _version, status = args
        return not (method == "POST" and path == "/v1/workers/ready" and status == 200)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rbee_runtime.hive", description="rbee hive: runs workers on this machine"
    )
    parser.add_argument("--config", required=True, help="hive config file (YAML or JSON)")
    args = parser.parse_args(argv)
    try:
        config = load_hive_config(args.config)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"rbee hive: cannot use config {args.config}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check is noise
    try:
        app = create_app(config)
    except DataDirInUseError as exc:
        print(f"rbee hive: {exc}", file=sys.stderr)
        return 1
    tls = config.tls.uvicorn if config.tls else {}
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level, lifespan="on",
                              **fast_server_options(), **tls)  # fmt: skip
    if config.log_level != "debug":  # after uvicorn.Config, which (re)configures its loggers
        logging.getLogger("uvicorn.access").addFilter(_quiet_announces)  # workers re-announce every few s
    # Listen before the app starts: uvicorn runs the lifespan (heartbeats, re-adoption) before it binds,
    # so a hive whose port is taken would report to the queen as alive between its restarts.
    try:
        listening = settings.bind_socket()
    except SystemExit:  # uvicorn has logged why (address in use, permission denied)
        print(f"rbee hive: cannot listen on {config.host}:{config.port}", file=sys.stderr)
        return 1
    uvicorn.Server(settings).run(sockets=[listening])
    return 0


if __name__ == "__main__":
    sys.exit(main())
