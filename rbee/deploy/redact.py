"""Secrets out of what a plan shows: every secret value rbee knows, and the values of keys that look secret.

``rbee plan`` shows file contents from the hosts and from the spec, and its markdown is posted on pull
requests. A ``Redactor`` replaces, in any text, each known secret (the queen's API keys, the cluster
secret and every credential derived from it, the TLS private keys of the control machine's state) by
``MARKER``, then the value of every line whose key looks like a secret (``token: …``, ``PASSWORD=…``)
unless the value is a file reference, the body of every PEM private key, and the password of every URL.
Texts are redacted before they are compared, so a diff never holds a secret on either side.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

from rbee.deploy.cluster_ca import tls_dir
from rbee.spec.keys import ApiKeysError, api_keys
from rbee.spec.models import ClusterSpec
from rbee_runtime.common.credentials import hive_credential, worker_credential

MARKER = "<redacted>"

MIN_SECRET_LENGTH = 4
"""Known secrets shorter than this are not replaced (they would mangle every text, and hide nothing)."""

LINE_SECRET_LENGTH = 16
"""A line of a multi-line secret (a PEM body line) counts as a secret of its own from this length."""

_SECRET_KEY = re.compile(
    r"""^(?P<lead>\s*(?:[-#;]\s*)?(?:export\s+)?["']?)
        (?P<key>[\w.-]*(?:secret|token|passw(?:or)?d|passphrase|api[_-]?keys?|credential|private[_-]?key|auth)[\w.-]*)
        (?P<sep>["']?\s*[:=]\s*)(?P<value>\S.*?)\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_FILE_REFERENCE = re.compile(r"""^["']?(?:[/$%~]|[\w.@-]+:[/$%])[^\s"']*["']?$""")
"""A path (``/etc/…``), a variable (``${CREDENTIALS_DIRECTORY}/…``), a systemd specifier, or ``name:/path``."""
_VARIABLE_NAME = re.compile(r"""^["']?[A-Z_][A-Z0-9_]*["']?$""")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:token|access_token|api_key|apikey|key|secret|password|sig|signature)=)[^&\s\"'#]+", re.IGNORECASE
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")


class Redactor:
    """Replaces secrets in texts (see the module docstring); the same redactor is used for every host."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            stripped = secret.strip()
            if len(stripped) >= MIN_SECRET_LENGTH:
                values.add(stripped)
            if "\n" in stripped:
                values.update(line.strip() for line in stripped.splitlines() if len(line.strip()) >= LINE_SECRET_LENGTH)
        self._values = sorted(values, key=len, reverse=True)  # a secret containing another goes first
        self._pattern = re.compile("|".join(re.escape(v) for v in self._values)) if self._values else None

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """This redactor and more secrets."""
        return Redactor([*self._values, *secrets])

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by ``MARKER``."""
        if self._pattern is not None:
            text = self._pattern.sub(MARKER, text)
        text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{MARKER}@", text)
        text = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MARKER}", text)
        lines = text.split("\n")
        in_key = False
        for index, line in enumerate(lines):
            if in_key:
                if _PEM_END.search(line):
                    in_key = False
                else:
                    lines[index] = MARKER
                continue
            if _PEM_BEGIN.search(line):
                in_key = not _PEM_END.search(line)
                continue
            lines[index] = _secret_value(line)
        return "\n".join(lines)


def _secret_value(line: str) -> str:
    """``line`` with its value replaced when its key looks like a secret and the value is no file reference."""
    found = _SECRET_KEY.match(line)
    if found is None:
        return line
    value, key = found["value"], found["key"]
    if value == MARKER or _FILE_REFERENCE.match(value):
        return line
    if key.lower().endswith("_env") and _VARIABLE_NAME.match(value):  # the name of a variable, not its value
        return line
    return f"{found['lead']}{key}{found['sep']}{MARKER}"


def spec_secrets(spec: ClusterSpec, base_dir: Path, cluster_secret: str | None) -> list[str]:
    """Every secret a plan of ``spec`` may meet: the API keys (when readable), the cluster secret, each host's
    hive and worker credential, and the TLS private keys kept on this control machine for the cluster."""
    found: list[str] = []
    with contextlib.suppress(ApiKeysError):  # no keys to hide: the plan reports the unreadable source
        found += api_keys(spec, base_dir)
    if cluster_secret:
        found.append(cluster_secret)
        for host in spec.hosts:
            hive = hive_credential(cluster_secret, host.name)
            found += [hive, worker_credential(hive)]
    folder = tls_dir(spec.cluster)
    for key_file in [folder / "ca.key", *sorted(folder.glob("hosts/*.key"))]:
        try:
            found.append(key_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    return found
