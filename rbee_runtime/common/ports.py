"""Default ports of the services (one place, so the CLI, the spec and the services agree)."""

QUEEN_PORT = 7833
HIVE_PORT = 7835
WORKER_PORT_FIRST = 7840
WORKER_PORT_LAST = 7999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
