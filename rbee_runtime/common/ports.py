"""Default ports of the services (one place, so the CLI, the spec and the services agree)."""

QUEEN_PORT = 7833
HIVE_PORT = 7835
WORKER_PORT_FIRST = 7840
WORKER_PORT_LAST = 7999
