"""The environment variables rbee reads, shown at the end of ``rbee --help`` (one place, checked by a test)."""

from __future__ import annotations

ENVIRONMENT: dict[str, str] = {
    "RBEE_QUEEN_URL": "the queen the cluster commands (workers, hives, models, infer, top) talk to",
    "RBEE_API_KEY": "the API key those commands send (prefer --api-key-file: a file, never argv)",
    "RBEE_CA_FILE": "the CA an https:// queen chains to (default: system CAs + clusters deployed from here)",
    "RBEE_SPEC": "the cluster spec pyinfra's inventory reads (rbee plan/deploy set it from their argument)",
    "RBEE_CLUSTER_SECRET": "the cluster's secret for a deploy from CI (else a file in the state folder)",
    "RBEE_STATE_DIR": "where rbee keeps this machine's state (default ~/.local/state/rbee)",
    "RBEE_TEMPLATES": "a folder of templates replacing the package's own (rbee/templates)",
    "HF_TOKEN": "token for gated or private Hugging Face models",
    "HF_ENDPOINT": "a Hugging Face mirror (default https://huggingface.co)",
    "RBEE_TESTHOSTS_DIR": "where rbee testhosts keeps its images and hosts",
    "RBEE_TESTHOSTS_RELEASES": "the Debian releases of the test hosts, e.g. bookworm,trixie",
}
"""Every variable a user may set, with what it changes (internal ones, set by rbee for its children, are not)."""

INTERNAL = frozenset(
    {"RBEE_PREFLIGHT_REPORT", "RBEE_PRUNE_FILE", "RBEE_TESTHOST_CGROUPS", "RBEE_PREFIX", "RBEE_WORKER_ARGS"}
)
"""Set by rbee for its own subprocesses or on hosts (the probe's shell, the worker unit's env file), not by users."""


def epilog() -> str:
    """The help's closing section: one line per variable (rich markup; typer keeps each line)."""
    lines = [f"[bold]{name}[/bold]  {meaning}" for name, meaning in ENVIRONMENT.items()]
    return "[bold]Environment:[/bold]\n\n" + "\n\n".join(lines)
