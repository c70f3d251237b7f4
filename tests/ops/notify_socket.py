"""A stand-in for systemd's notify socket: a real AF_UNIX datagram socket that records each message and its sender.

``NotifySocket.address`` goes into ``$NOTIFY_SOCKET`` (``@name``: the abstract namespace, as systemd may give
it). ``SO_PASSCRED`` gives each message's sender pid, which is how systemd's ``NotifyAccess=main`` judges it.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Message:
    """One datagram: its ``KEY=value`` fields, in order, and the pid that sent it."""

    fields: list[tuple[str, str]]
    pid: int

    def get(self, key: str) -> str | None:
        return next((value for k, value in self.fields if k == key), None)


class NotifySocket:
    """Bound at ``@rbee-test-<random>``; :meth:`wait_for` reads messages until one has the wanted field."""

    def __init__(self) -> None:
        self.address = f"@rbee-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + self.address[1:])
        self.messages: list[Message] = []

    def receive(self, timeout_s: float) -> Message | None:
        """The next message, or None after ``timeout_s``."""
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = [tuple(line.split("=", 1)) for line in data.decode().split("\n") if "=" in line]
        message = Message([(k, v) for k, v in fields], pid)
        self.messages.append(message)
        return message

    def wait_for(self, key: str, timeout_s: float, value: str | None = None) -> Message:
        """Read until a message holds ``key`` (with ``value``, when given); fail with what came after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for message in self.messages:
            if message.get(key) is not None and value in (None, message.get(key)):
                return message
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message.get(key) is not None and value in (None, message.get(key)):
                return message
        raise AssertionError(f"no {key}={value or '*'} within {timeout_s} s; got {[m.fields for m in self.messages]}")

    def drain(self, seconds: float) -> list[Message]:
        """Everything that arrives within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)
        return self.messages

    def statuses(self) -> list[str]:
        return [s for m in self.messages if (s := m.get("STATUS")) is not None]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
