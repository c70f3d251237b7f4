"""``python -m rbee_runtime.hive --config hive.yaml [--log-format text|json]``: run one hive (SIGTERM stops its
workers, then exits).

Under systemd (``Type=notify``) the hive says ``READY=1`` once its catalog is open with the configured models,
its workers re-adopted, its port listening and its first heartbeat to the queen tried (taken or not: a hive
without its queen still serves its workers, and says so in its status line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from rbee_runtime.common.log_setup import (
    LOG_FORMAT_ENV,
    LogFormatError,
    add_log_format_argument,
    configure_logging,
    log_format,
)
from rbee_runtime.common.notified_server import NotifiedServer
from rbee_runtime.common.sd_notify import notifier
from rbee_runtime.common.serving import fast_server_options
from rbee_runtime.hive.app import create_app
from rbee_runtime.hive.config import load_hive_config
from rbee_runtime.hive.service import DataDirInUseError, Hive


def _quiet_announces(record: logging.LogRecord) -> bool:
    """Access-log filter: drop the accepted ``POST /v1/workers/ready`` lines (workers repeat them)."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 5:
        _client, method, path, _version, status = args
        return not (method == "POST" and path == "/v1/workers/ready" and status == 200)
    return True


def main(argv: list[str] | None = None) -> int:
    notifier()  # read (and take out of the environment: its workers must not use it) systemd's notify socket
    parser = argparse.ArgumentParser(
        prog="python -m rbee_runtime.hive", description="rbee hive: runs workers on this machine"
    )
    parser.add_argument("--config", required=True, help="hive config file (YAML or JSON)")
    add_log_format_argument(parser)
    args = parser.parse_args(argv)
    try:
        fmt = log_format(args.log_format)
    except LogFormatError as exc:
        print(f"rbee hive: {exc}", file=sys.stderr)
        return 2
    try:
        config = load_hive_config(args.config)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"rbee hive: cannot use config {args.config}: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, fmt, service="hive")
    os.environ[LOG_FORMAT_ENV] = fmt  # the workers it starts log alike
    if config.log_level != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check is noise
    try:
        app = create_app(config)
    except DataDirInUseError as exc:
        print(f"rbee hive: {exc}", file=sys.stderr)
        return 1
    tls = config.tls.uvicorn if config.tls else {}
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level, lifespan="on",
                              log_config=None, **fast_server_options(), **tls)  # fmt: skip
    if config.log_level != "debug":  # after uvicorn.Config, which (re)configures its loggers
        logging.getLogger("uvicorn.access").addFilter(_quiet_announces)  # workers re-announce every few s
    # Listen before the app starts: uvicorn runs the lifespan (heartbeats, re-adoption) before it binds,
    # so a hive whose port is taken would report to the queen as alive between its restarts.
    try:
        listening = settings.bind_socket()
    except SystemExit:  # uvicorn has logged why (address in use, permission denied)
        print(f"rbee hive: cannot listen on {config.host}:{config.port}", file=sys.stderr)
        notifier().send(STATUS=f"cannot listen on {config.host}:{config.port}")
        return 1
    hive: Hive = app.state.hive
    NotifiedServer(settings, hive.status_line, ready_when=hive.first_heartbeat_tried).run(sockets=[listening])
    return 0


if __name__ == "__main__":
    sys.exit(main())
