"""rbee control plane: the cluster spec, the CLI and the helpers the deploy suite uses."""

__version__ = "0.1.0"
