"""The control machine's cluster secret: made once (0600), the same ever after, given by CI as a variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee.deploy.cluster_secret import ENV, ClusterSecretError, cluster_secret, secret_path


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RBEE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv(ENV, raising=False)
    return tmp_path / "state"


def test_made_once_private_and_kept(state: Path) -> None:
    assert cluster_secret("lab", create=False) is None and not secret_path("lab").exists()
    first = cluster_secret("lab")
    path = secret_path("lab")
    assert path == state / "clusters" / "lab" / "cluster-secret"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o077 == 0
    assert first is not None and len(first) == 64 and cluster_secret("lab") == first
    assert cluster_secret("other") != first  # one secret per cluster


def test_ci_gives_it_as_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "ab" * 32)
    assert cluster_secret("lab") == "ab" * 32 and not secret_path("lab").exists()
    monkeypatch.setenv(ENV, "not-a-secret")
    with pytest.raises(ClusterSecretError, match=r"\$RBEE_CLUSTER_SECRET must be 64 lowercase hex digits.*token_hex"):
        cluster_secret("lab")


def test_a_secret_others_can_read_is_refused() -> None:
    cluster_secret("lab")
    secret_path("lab").chmod(0o644)
    with pytest.raises(ClusterSecretError, match=r"readable by others.*chmod 600"):
        cluster_secret("lab")


def test_a_damaged_secret_file_is_refused() -> None:
    path = secret_path("lab")
    path.parent.mkdir(parents=True)
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ClusterSecretError, match="64 lowercase hex digits"):
        cluster_secret("lab")
