"""``python -m rbee_runtime.queen --config queen.yaml [--host H] [--port P] [--log-format text|json]``.

Under systemd (``Type=notify``) the queen says ``READY=1`` once its app started and its port listens.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from rbee_runtime.common.log_setup import LogFormatError, add_log_format_argument, configure_logging, log_format
from rbee_runtime.common.notified_server import NotifiedServer
from rbee_runtime.common.sd_notify import notifier
from rbee_runtime.common.serving import fast_server_options
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import ConfigError, QueenConfig, load_queen_config
from rbee_runtime.queen.state import QueenState
from rbee_runtime.queen.status_line import status_line


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, load the config and serve until stopped."""
    notifier()  # read (and take out of the environment) systemd's notify socket
    parser = argparse.ArgumentParser(prog="python -m rbee_runtime.queen", description="Run the rbee queen.")
    parser.add_argument("--config", help="queen.yaml (QueenConfig); defaults apply without it")
    parser.add_argument("--host", help="address to bind (overrides the config)")
    parser.add_argument("--port", type=int, help="port to bind (overrides the config)")
    add_log_format_argument(parser)
    args = parser.parse_args(argv)
    try:
        fmt = log_format(args.log_format)
        config = load_queen_config(args.config) if args.config else QueenConfig()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if overrides:
            config = QueenConfig.model_validate(config.model_dump() | overrides)
    except (ConfigError, LogFormatError, ValueError) as exc:
        print(f"rbee queen: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, fmt, service="queen", label=f"queen[{config.queen_id}] ")
    if config.log_level.lower() != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per worker call is noise
    tls = config.tls.uvicorn if config.tls else {}  # HTTPS on the one port: the public API and the heartbeats
    app = create_app(config)
    state: QueenState = app.state.queen
    # No access log: a line per completion is work on the hot path; rbee_queen_requests_total counts them.
    settings = uvicorn.Config(app, host=config.host, port=config.port, log_level=config.log_level.lower(),
                              log_config=None, access_log=False, **fast_server_options(), **tls)  # fmt: skip
    server = NotifiedServer(settings, lambda: status_line(state))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: uvicorn re-raises it once stopped
        server.run()
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
