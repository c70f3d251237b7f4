"""``python -m rbee_runtime.queen --config queen.yaml [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from rbee_runtime.common.serving import fast_server_options
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.config import ConfigError, QueenConfig, load_queen_config


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, load the config and serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m rbee_runtime.queen", description="Run the rbee queen.")
    parser.add_argument("--config", help="queen.yaml (QueenConfig); defaults apply without it")
    parser.add_argument("--host", help="address to bind (overrides the config)")
    parser.add_argument("--port", type=int, help="port to bind (overrides the config)")
    args = parser.parse_args(argv)
    try:
        config = load_queen_config(args.config) if args.config else QueenConfig()
        overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if overrides:
            config = QueenConfig.model_validate(config.model_dump() | overrides)
    except (ConfigError, ValueError) as exc:
        print(f"rbee queen: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s queen[{config.queen_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if config.log_level.lower() != "debug":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per worker call is noise
    tls = config.tls.uvicorn if config.tls else {}  # HTTPS on the one port: the public API and the heartbeats
    # No access log: a line per completion is work on the hot path; rbee_queen_requests_total counts them.
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=config.log_level.lower(),
                access_log=False, **fast_server_options(), **tls)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
