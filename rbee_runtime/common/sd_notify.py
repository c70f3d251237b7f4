"""systemd's notify protocol (``sd_notify(3)``): tell the service manager we are ready, what we do, that we live.

systemd gives a ``Type=notify`` service the path of a datagram socket in ``$NOTIFY_SOCKET`` (a name starting
with ``@`` is in the abstract namespace) and, with ``WatchdogSec=``, the ping period in ``$WATCHDOG_USEC`` (for
the process ``$WATCHDOG_PID``). Each message is newline-separated ``KEY=value`` lines: ``READY=1``,
``STATUS=...``, ``STOPPING=1``, ``WATCHDOG=1``, ``EXTEND_TIMEOUT_USEC=...``. Without ``$NOTIFY_SOCKET`` (``rbee up``,
tests, launchd) every call is a no-op. :func:`notifier` reads the variables once and removes them from the
environment, so the workers a hive starts do not inherit them (systemd would refuse their messages, and log it).

Written here rather than taken from PyPI: ``sdnotify`` (0.3.2, 2017) has no types and no watchdog period.
"""

from __future__ import annotations

import functools
import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to ``address`` (None: does nothing). Thread-safe: each message is one datagram."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        if self.address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._status = ""

    @property
    def enabled(self) -> bool:
        """True under a service manager that listens."""
        return self._socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1`` (half the watchdog timeout), or None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.enabled and self.watchdog_usec else None

    def send(self, **fields: str | int) -> bool:
        """One message of ``KEY=value`` lines (``send(READY=1, STATUS="...")``); False when it was not delivered."""
        if self._socket is None or self.address is None:
            return False
        text = "\n".join(f"{key}={_one_line(str(value))}" for key, value in fields.items())
        try:
            self._socket.sendto(text.encode(), self.address)
        except OSError as exc:  # the manager went away or the socket is full: never stop the service for it
            log.debug("sd_notify %r failed: %s", text, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """``READY=1`` with what the service now does."""
        self._status = status
        self.send(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        """``STATUS=``, only when it changed (a state, not a counter: ``systemctl status`` shows it)."""
        if status != self._status:
            self._status = status
            self.send(STATUS=status)

    def stopping(self, status: str) -> None:
        """``STOPPING=1``: the service is shutting down on its own or on request."""
        self._status = status
        self.send(STOPPING=1, STATUS=status)

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the event loop still runs."""
        self.send(WATCHDOG=1)

    def extend_start(self, seconds: float, status: str) -> None:
        """``EXTEND_TIMEOUT_USEC``: starting takes longer (a model's checksum); the next message is due within it."""
        self._status = status
        self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1e6), STATUS=status)


def _one_line(value: str) -> str:
    """A field value on one line: a newline would start another field."""
    return " ".join(value.splitlines())


def from_environment(environ: dict[str, str] | os._Environ[str] = os.environ) -> Notifier:
    """The notifier of this process, from ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``/``$WATCHDOG_PID``,
    which are removed from ``environ`` (the children of this process must not use them)."""
    address = environ.pop("NOTIFY_SOCKET", None) or None
    usec_text = environ.pop("WATCHDOG_USEC", "")
    pid_text = environ.pop("WATCHDOG_PID", "")
    usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
    if pid_text and pid_text != str(os.getpid()):
        usec = None  # the watchdog is some other process's
    return Notifier(address, usec)


@functools.cache
def notifier() -> Notifier:
    """This process's notifier (read from the environment at the first call)."""
    return from_environment()
