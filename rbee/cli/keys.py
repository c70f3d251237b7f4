"""Single keys from the terminal without blocking (``rbee top``'s ``q``), over a plain SSH terminal too."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from types import TracebackType


class KeyReader:
    """While entered, stdin (when it is a terminal) gives keys at once, unechoed; Ctrl-C still interrupts.

    cbreak mode keeps the terminal's signals (ISIG): Ctrl-C raises ``KeyboardInterrupt`` as usual. The
    terminal's settings are restored on exit, also after an exception.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._saved: list[int | list[bytes | int]] | None = None

    def __enter__(self) -> KeyReader:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if os.isatty(fd):
            self._fd, self._saved = fd, termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._fd is not None and self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def wait(self, seconds: float, keys: str) -> bool:
        """Wait up to ``seconds``; True as soon as one of ``keys`` is pressed (other keys are ignored)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._fd is None:
                time.sleep(left)
                return False
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                data = os.read(self._fd, 64)
                if not data:  # the terminal went away
                    return True
                if any(chr(byte) in keys for byte in data):
                    return True
        return False
