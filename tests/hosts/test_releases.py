"""Which Debian release each test host gets: the assignment rule, its records, the CLI and the plugin's env var.

No hosts boot here; ``test_release_hosts.py`` boots a mixed pair for real.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rbee.cli import testhosts_cmd
from rbee.testhosts import Paths, releases, rootfs
from tests.hosts import plugin


def test_releases_go_to_the_hosts_in_order_and_the_last_one_repeats() -> None:
    names = ["h1", "h2", "h3", "h4"]
    assert releases.assign(names, ["bookworm", "trixie"]) == {
        "h1": "bookworm", "h2": "trixie", "h3": "trixie", "h4": "trixie",
    }  # fmt: skip
    assert releases.assign(names[:2], ["trixie"]) == {"h1": "trixie", "h2": "trixie"}
    assert releases.assign(names[:2], ["trixie", "bookworm"]) == {"h1": "trixie", "h2": "bookworm"}
    assert releases.assign(names[:2], []) == {"h1": "bookworm", "h2": "bookworm"}  # the default, as before


def test_unknown_releases_and_more_releases_than_hosts_are_clear_errors() -> None:
    with pytest.raises(releases.UnknownReleaseError, match=r"'sid'; supported: bookworm, trixie"):
        releases.assign(["h1", "h2"], ["bookworm", "sid"])
    with pytest.raises(releases.UnknownReleaseError, match=r"2 releases \(bookworm, trixie\) for 1 host"):
        releases.assign(["h1"], ["bookworm", "trixie"])


def test_a_host_remembers_its_release_and_a_host_without_a_record_is_bookworm(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert releases.recorded(paths, "h2") == "bookworm"
    releases.record(paths, "h2", "trixie")
    assert paths.release_file("h2") == tmp_path / "hosts/h2/release"
    assert releases.recorded(paths, "h2") == "trixie"
    with pytest.raises(releases.UnknownReleaseError):
        releases.record(paths, "h2", "buster")


def test_each_release_has_its_own_tarball_base_and_stamps(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert paths.tarball("trixie") == tmp_path / "cache/trixie-rootfs.tar"
    assert paths.base("trixie") == tmp_path / "base-trixie" != paths.base("bookworm")
    assert rootfs.tarball_stamp("bookworm") != rootfs.tarball_stamp("trixie")
    assert {"g++", "make", "python3-venv", "python3-pip"} <= set(rootfs.INCLUDE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ("bookworm",)), ("trixie", ("trixie",)), (" bookworm , trixie ", ("bookworm", "trixie"))],
)
def test_the_session_releases_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv(plugin.COUNT_ENV, "2")
    monkeypatch.setenv(plugin.RELEASES_ENV, text)
    assert plugin.session_layout() == (2, expected)
    monkeypatch.setenv(plugin.RELEASES_ENV, "bookworm,jessie")
    with pytest.raises(releases.UnknownReleaseError, match="supported: bookworm, trixie"):
        plugin.session_layout()


class _Recorder:
    """Stands in for ``TestHosts`` in the CLI: records what ``up`` was asked (nothing boots)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def up(self, count: int, *, releases: Sequence[str] = (), timeout: float = 120.0) -> dict[str, str]:
        self.calls.append((count, tuple(releases)))
        return {f"h{i}": "running" for i in range(1, count + 1)}

    def release(self, name: str) -> str:
        return "trixie" if name != "h1" else "bookworm"

    @property
    def paths(self) -> Paths:
        return Paths(Path("/nonexistent"))


def test_cli_up_passes_the_releases_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(testhosts_cmd, "_hosts", lambda: recorder)
    monkeypatch.setattr(testhosts_cmd, "require_root", lambda: None)
    monkeypatch.delenv(releases.ENV, raising=False)
    runner = CliRunner()
    done = runner.invoke(testhosts_cmd.app, ["up", "3", "--release", "bookworm", "-r", "trixie"])
    assert done.exit_code == 0, done.output
    assert "trixie" in done.output
    done = runner.invoke(testhosts_cmd.app, ["up", "2"])
    assert done.exit_code == 0, done.output
    assert recorder.calls == [(3, ("bookworm", "trixie")), (2, ())]
    monkeypatch.setenv(releases.ENV, "bookworm,trixie")  # the session's releases (molecule re-ups through the CLI)
    assert runner.invoke(testhosts_cmd.app, ["up", "2"]).exit_code == 0
    assert runner.invoke(testhosts_cmd.app, ["up", "2", "-r", "trixie"]).exit_code == 0
    assert recorder.calls[2:] == [(2, ("bookworm", "trixie")), (2, ("trixie",))]
    monkeypatch.setenv(releases.ENV, "stretch")
    done = runner.invoke(testhosts_cmd.app, ["up", "2"])
    assert done.exit_code == 1 and "supported: bookworm, trixie" in done.output


def test_cli_rejects_an_unknown_release_listing_the_supported_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(testhosts_cmd, "_hosts", lambda: recorder)
    done = CliRunner().invoke(testhosts_cmd.app, ["up", "2", "--release", "sid"])
    assert done.exit_code == 2
    assert "unknown Debian release 'sid'" in done.output and "bookworm, trixie" in done.output
    assert recorder.calls == []
