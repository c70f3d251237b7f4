"""``python -m bench.proxy.canned_worker [--token-interval-us N] <worker options>``: a real worker process on
:class:`CannedEngine`.

It takes the worker's own command line (``python -m rbee_runtime.worker --help``) and runs the worker's
own server (:func:`rbee_runtime.worker.server.run`: HTTP app, service, announces, drain), with the engine
class swapped for the canned one, so any change to the worker's serving path is measured here too.
``--token-interval-us``: one piece every N µs (default 0: all at once).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from unittest import mock

from bench.proxy.canned_engine import CannedEngine
from rbee_runtime.worker import server
from rbee_runtime.worker.cli import parse_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the worker's options and serve on the canned engine until drained."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--token-interval-us", type=float, default=0.0)
    pace, rest = own.parse_known_args(argv)
    settings = parse_settings(rest)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s canned-worker[{settings.worker_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    engine = functools.partial(CannedEngine, token_interval_s=max(pace.token_interval_us, 0.0) / 1e6)
    with mock.patch.object(server, "Engine", engine):
        sys.exit(server.run(settings))


if __name__ == "__main__":
    main()
