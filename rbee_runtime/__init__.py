"""rbee runtime: the queen, hive and worker services that a deploy installs on each host."""

__version__ = "0.1.0"
API_VERSION = "v1"
