"""``rbee plan``'s data, made by the preflight in a dry run: each host's changes by kind, with redacted diffs.

Only in a dry run that writes a report (``rbee plan``: pyinfra ``--dry`` with ``$RBEE_PREFLIGHT_REPORT``) and
only for a host whose managed files differ, the files' current contents are read (``RbeeFileTexts``: one more
round trip; none when nothing differs, none in a deploy). Secret files are never read. Everything the report
holds is redacted on this control machine before it is written (``rbee.deploy.redact``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shlex
from pathlib import Path

from pyinfra.api.facts import FactBase
from pyinfra.context import host

from rbee.deploy.change_report import HostChanges, HostText, host_changes, texts_to_read
from rbee.deploy.cluster_secret import ClusterSecretError, cluster_secret
from rbee.deploy.host_diff import wanted_state
from rbee.deploy.host_plan import HostPlan
from rbee.deploy.redact import Redactor, spec_secrets
from rbee.deploy.text_diff import MAX_TEXT_BYTES
from rbee.deploys import control, control_engine, control_models, control_run

REPORT_ENV = "RBEE_PREFLIGHT_REPORT"

READ_SCRIPT = """import base64, json, os, sys
limit = int(sys.argv[1])
for path in sys.argv[2:]:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = handle.read(limit) if size <= limit else b""
    except OSError as exc:
        print(json.dumps({"path": path, "error": exc.strerror or str(exc)}))
        continue
    print(json.dumps({"path": path, "size": size, "data": base64.b64encode(data).decode()}))
"""
"""Prints one JSON line per file: its size and, when at most ``limit`` bytes, its content (base64)."""

exported: dict[str, HostChanges] = {}
"""Each planned host's changes (pyinfra host name → changes), written into the preflight report."""

_redactors: dict[str, Redactor] = {}


class RbeeFileTexts(FactBase[dict[str, HostText]]):
    """The content of small files (at most ``MAX_TEXT_BYTES`` each; a larger one by its size only)."""

    def command(self, paths: list[str]) -> str:
        files = " ".join(shlex.quote(p) for p in paths)
        return f"python3 -c {shlex.quote(READ_SCRIPT)} {MAX_TEXT_BYTES} {files} 2>/dev/null || true"

    def process(self, output: list[str]) -> dict[str, HostText]:
        found: dict[str, HostText] = {}
        for line in output:
            try:
                row = json.loads(line)
                found[str(row["path"])] = HostText(base64.b64decode(row["data"], validate=True), int(row["size"]))
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue  # an unreadable file: shown as not compared
        return found

    @staticmethod
    def default() -> dict[str, HostText]:
        return {}


def planning() -> bool:
    """True in ``rbee plan``'s run: a dry run that writes a report."""
    return control_run.DRY_RUN and bool(os.environ.get(REPORT_ENV))


def _redactor(plan: HostPlan) -> Redactor:
    """Every secret of the cluster, and those of this host's plan (its credential files, its TLS key)."""
    cluster = control_run.spec()
    if cluster.cluster not in _redactors:
        base_dir = Path(str(host.data.rbee_spec_file)).parent
        try:
            secret = cluster_secret(cluster.cluster, create=False)
        except ClusterSecretError:
            secret = None  # the host plan has failed on it already
        _redactors[cluster.cluster] = Redactor(spec_secrets(cluster, base_dir, secret))
    return _redactors[cluster.cluster].with_secrets(f.text for f in plan.files if f.secret)


def export(plan: HostPlan) -> None:
    """Record this host's changes for ``rbee plan`` (nothing outside its dry run)."""
    if not planning():
        return
    changes = control.changes(plan)
    wanted = wanted_state(plan, control.run_inputs(plan))
    paths = texts_to_read(plan, changes)
    current = host.get_fact(RbeeFileTexts, paths=paths) if paths else {}
    cluster = control_run.spec()
    sizes = {m: fetched.size_bytes if (fetched := control_models.model_file(cluster.model(m), cluster)) else None
             for m in plan.models}  # fmt: skip
    kept = control_engine.installed_engine(plan) is not None
    cached = kept or control_engine.engine_wheel(plan.features).wheel is not None
    exported[host.name] = host_changes(plan, wanted, changes, control_run.host_state(), current, _redactor(plan),
                                       model_bytes=sizes, engine_cached=cached)  # fmt: skip
