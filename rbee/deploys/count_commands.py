"""pyinfra's CLI with every remote command and file transfer logged: what a deploy costs in round trips.

``python -m rbee.deploys.count_commands LOG PYINFRA-ARGS...`` runs ``pyinfra PYINFRA-ARGS...`` unchanged, except
that the SSH connector appends one JSON line per call to ``LOG``: ``{"host", "kind", "text"}``, ``kind``
``command`` (a shell command: a fact or an operation's), ``put`` or ``get`` (a file transfer; a streamed upload,
``rbee.deploys.stream``, is a ``put`` whose text is ``<temp file> from byte <offset>``). The tests
and ``bench/deploy.py`` count a no-op deploy's remote work from it (``read_log``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyinfra.connectors.ssh import SSHConnector

from rbee.deploys.stream import StreamUpload


def read_log(path: Path) -> list[dict[str, str]]:
    """The logged calls, in order (an absent log: none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def per_host(calls: list[dict[str, str]]) -> dict[str, int]:
    """Remote calls (commands and transfers) per host name."""
    return dict(Counter(call["host"] for call in calls))


def _logged(log: Path, kind: str, method: Callable[..., Any], text_of: Callable[..., str]) -> Callable[..., Any]:
    def wrapper(self: SSHConnector, *args: Any, **kwargs: Any) -> Any:
        line = {"host": self.host.name, "kind": kind, "text": text_of(*args)[:4000]}
        with log.open("a") as out:
            out.write(json.dumps(line) + "\n")
        return method(self, *args, **kwargs)

    return wrapper


def _logged_stream(log: Path, method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: StreamUpload, state: Any, host: Any, *args: Any) -> Any:
        text = f"{self.upload.temp} from byte {self.upload.offset}"
        with log.open("a") as out:
            out.write(json.dumps({"host": host.name, "kind": "put", "text": text}) + "\n")
        return method(self, state, host, *args)

    return wrapper


def install(log: Path) -> None:
    """Log every ``run_shell_command``, ``put_file`` and ``get_file`` of pyinfra's SSH connector, and every streamed
    upload, to ``log``."""
    SSHConnector.run_shell_command = _logged(  # type: ignore[method-assign]
        log, "command", SSHConnector.run_shell_command, lambda command, *_: str(command)
    )
    SSHConnector.put_file = _logged(  # type: ignore[method-assign]
        log, "put", SSHConnector.put_file, lambda _src, remote, *_: str(remote)
    )
    SSHConnector.get_file = _logged(  # type: ignore[method-assign]
        log, "get", SSHConnector.get_file, lambda remote, *_: str(remote)
    )
    StreamUpload.execute = _logged_stream(log, StreamUpload.execute)  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m rbee.deploys.count_commands LOG PYINFRA-ARGS...")
    install(Path(sys.argv[1]))
    from pyinfra_cli.main import main as pyinfra_main  # type: ignore[import-untyped]

    sys.argv = ["pyinfra", *sys.argv[2:]]
    sys.exit(pyinfra_main())


if __name__ == "__main__":
    main()
