"""A wheelhouse's identity is known without preparing it (``rbee.deploy.wheelhouse.planned_fingerprint``), so a plan
on a control machine with an empty cache downloads and builds nothing, and ``wheelhouse_ready`` tells when one is
prepared already."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbee.deploy import rbee_wheel, wheelhouse
from rbee.deploy.wheelhouse import LOCK_STAMP, SOURCE_STAMP, WheelhouseTarget, planned_fingerprint, wheelhouse_ready

CPU = WheelhouseTarget("3.11", "linux", "x86_64")


def test_the_identity_is_the_target_its_pins_and_rbees_code(monkeypatch: pytest.MonkeyPatch) -> None:
    first = planned_fingerprint(CPU)
    assert first == planned_fingerprint(CPU)
    others = {planned_fingerprint(WheelhouseTarget("3.12", "linux", "x86_64")),
              planned_fingerprint(WheelhouseTarget("3.11", "linux", "aarch64"))}  # fmt: skip
    assert first not in others and len(others) == 2
    monkeypatch.setattr(rbee_wheel, "fingerprint", lambda: "another checkout")
    assert planned_fingerprint(CPU) != first


def test_a_wheelhouse_is_ready_only_with_its_pins_and_this_codes_rbee_wheel(tmp_path: Path) -> None:
    assert not wheelhouse_ready(CPU, tmp_path), "nothing prepared"
    folder = tmp_path / CPU.name
    folder.mkdir()
    (folder / LOCK_STAMP).write_text(wheelhouse._pins(CPU)[1])
    (folder / SOURCE_STAMP).write_text(rbee_wheel.fingerprint())
    assert not wheelhouse_ready(CPU, tmp_path), "no rbee wheel"
    (folder / "rbee-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    assert wheelhouse_ready(CPU, tmp_path)
    (folder / SOURCE_STAMP).write_text("older code")
    assert not wheelhouse_ready(CPU, tmp_path), "rbee's code changed since"
    (folder / SOURCE_STAMP).write_text(rbee_wheel.fingerprint())
    (folder / LOCK_STAMP).write_text("numpy==1.0\n")
    assert not wheelhouse_ready(CPU, tmp_path), "another lock"
