"""Where rbee lives on a deployed host."""

from __future__ import annotations

from dataclasses import dataclass

CONFIG_DIR = "/etc/rbee"
DATA_DIR = "/var/lib/rbee"
WORKERS_DIR = f"{CONFIG_DIR}/workers"
#: The internal plane's credentials and the queen's API keys (root, 0600, in a 0700 folder): systemd hands
#: each service its own (``LoadCredential=``).
CREDENTIALS_DIR = f"{CONFIG_DIR}/credentials"
API_KEYS_FILE = f"{CREDENTIALS_DIR}/api-keys"
#: Where releases before 0.2 kept the API keys (0640, readable by the service group): removed by a deploy.
OLD_API_KEYS_FILE = f"{CONFIG_DIR}/api-keys"
CLUSTER_SECRET_NAME = "cluster-secret"
HIVE_CREDENTIAL_NAME = "hive.credential"
WORKER_CREDENTIAL_NAME = "worker.credential"
API_KEYS_NAME = "api-keys"

# macOS hosts (launchd): the configs stay in /etc/rbee (/etc is /private/etc, not protected by SIP and
# kept across OS updates), so every config path is the same as on Linux. The state moves to
# /usr/local/var/rbee: macOS has no /var/lib, and /usr/local is the admin's own tree (Homebrew on
# Apple silicon lives in /opt/homebrew). launchd keeps no journal: each daemon logs to a file there.
MACOS_DATA_DIR = "/usr/local/var/rbee"
MACOS_LOG_DIR = f"{MACOS_DATA_DIR}/logs"
LAUNCH_DAEMONS_DIR = "/Library/LaunchDaemons"


@dataclass(frozen=True)
class HostLayout:
    """Paths under the install prefix (``deploy.prefix``)."""

    prefix: str

    @property
    def venv(self) -> str:
        return f"{self.prefix}/venv"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    @property
    def wheelhouse(self) -> str:
        return f"{self.prefix}/wheelhouse"

    @property
    def engines(self) -> str:
        return f"{self.prefix}/engines"

    @property
    def models(self) -> str:
        return f"{self.prefix}/models"

    @property
    def stamps(self) -> str:
        return f"{self.prefix}/stamps"

    def model_path(self, model_id: str) -> str:
        return f"{self.models}/{model_id}.gguf"
