"""LiteLLM's proxy as a separate process, its models pointing at workers' OpenAI routes.

LiteLLM is optional (``pip install -e '.[bench]'``); :func:`find_litellm` says where its command is or why
the mode is skipped. The config turns logging and callbacks off and sets a master key (every listener
authenticates); the worker's credential is its upstream API key.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import httpx
import yaml

from bench.proxy.processes import Child
from rbee_runtime.common.ports import free_port

#: Environment variable naming a ``litellm`` command (e.g. one in a venv of its own).
LITELLM_ENV = "RBEE_BENCH_LITELLM"


#: ``litellm_settings``: no callbacks, no logging of messages; retries left at LiteLLM's default (a stale
#: keep-alive connection to the worker is retried, as the queen fails over before the first token).
QUIET_SETTINGS: dict[str, object] = {
    "callbacks": [], "success_callback": [], "failure_callback": [], "set_verbose": False,
    "turn_off_message_logging": True, "json_logs": False, "telemetry": False, "request_timeout": 120,
}  # fmt: skip


def find_litellm(explicit: str | None = None) -> tuple[str | None, str]:
    """The ``litellm`` command to run (``explicit``, ``$RBEE_BENCH_LITELLM``, this venv's, or on PATH) and what
    was found, or None and why the mode is skipped."""
    candidates = [
        ("--litellm", explicit),
        (f"${LITELLM_ENV}", os.environ.get(LITELLM_ENV)),
        ("this venv", str(Path(sys.executable).with_name("litellm"))),
        ("PATH", shutil.which("litellm")),
    ]
    for origin, path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path, f"{path} ({origin})"
        if path and origin.startswith(("--", "$")):
            return None, f"{origin} names {path}, which is not an executable file"
    return None, (
        "LiteLLM is not installed: `pip install -e '.[bench]'` (or point "
        f"${LITELLM_ENV} / --litellm at a litellm command)"
    )


#: LiteLLM's provider per OpenAI API: ``openai/`` calls chat completions, ``text-completion-openai/`` completions.
PROVIDERS = {"chat": "openai", "completions": "text-completion-openai"}


def litellm_config(
    upstreams: dict[str, str], upstream_key: str | None, master_key: str, api: str = "completions"
) -> dict[str, object]:
    """One alias per model of ``upstreams`` (model → an OpenAI ``/v1`` base URL), called through the OpenAI
    API ``api`` (:data:`PROVIDERS`): the alias is the model's own id, so clients send the queen's bodies."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"{PROVIDERS[api]}/{model}",
                    "api_base": upstream_v1,
                    "api_key": upstream_key or "none",
                },
            }
            for model, upstream_v1 in upstreams.items()
        ],
        "litellm_settings": QUIET_SETTINGS,
        "general_settings": {"master_key": master_key, "disable_spend_logs": True, "disable_error_logs": True},
    }


class LiteLLMProxy:
    """A running ``litellm --config`` on a free loopback port; ``stop`` ends it and its children."""

    def __init__(
        self, command: str, upstreams: dict[str, str], upstream_key: str | None, workdir: Path, api: str = "completions"
    ) -> None:
        self.master_key = f"sk-bench-{secrets.token_hex(16)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / f"litellm-{self.port}.yaml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the worker's credential
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(litellm_config(upstreams, upstream_key, self.master_key, api), out)
        env = {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True", "DISABLE_ADMIN_UI": "True"}
        argv = [command, "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port), "--num_workers", "1"]
        self.child = Child("litellm proxy", argv, workdir / "logs" / f"litellm-{self.port}.log", env)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until ``/health/liveliness`` answers 200 (LiteLLM takes seconds to import)."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2, trust_env=False) as http:
            while time.monotonic() < deadline:
                self.child.check_alive()
                try:
                    if http.get(f"{self.url}/health/liveliness").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise TimeoutError(f"LiteLLM's proxy did not answer within {timeout_s:g} s (log {self.child.log_path})")

    def stop(self) -> None:
        self.child.stop()
