"""The wheelhouse shipped as one archive (``rbee.deploy.wheelhouse.wheelhouse_archive``)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from rbee.deploy.wheelhouse import Wheelhouse, wheelhouse_archive


def house(tmp_path: Path) -> Wheelhouse:
    folder = tmp_path / "py3.11-x86_64"
    folder.mkdir()
    for name in ("rbee-0.1.0-py3-none-any.whl", "numpy-2.0-cp311-cp311-manylinux_2_28_x86_64.whl"):
        (folder / name).write_bytes(name.encode() * 100)
    (folder / ".deps").write_text("numpy\n")  # bookkeeping, not shipped
    return Wheelhouse(folder, folder / "rbee-0.1.0-py3-none-any.whl")


def test_the_archive_holds_exactly_the_wheels_and_is_the_same_for_the_same_wheels(tmp_path: Path) -> None:
    wheels = house(tmp_path)
    archive = wheelhouse_archive(wheels, wheels.fingerprint)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert sorted(m.name for m in members) == sorted(p.name for p in wheels.folder.glob("*.whl"))
    assert all(m.uid == 0 and m.mode == 0o644 for m in members)
    first = archive.read_bytes()
    archive.unlink()
    assert wheelhouse_archive(wheels, wheels.fingerprint).read_bytes() == first


def test_a_new_fingerprint_makes_a_new_archive_and_drops_the_old_one(tmp_path: Path) -> None:
    wheels = house(tmp_path)
    old = wheelhouse_archive(wheels, wheels.fingerprint)
    (wheels.folder / "rbee-0.1.0-py3-none-any.whl").write_bytes(b"rebuilt")
    new = wheelhouse_archive(wheels, wheels.fingerprint)
    assert new != old and new.exists() and not old.exists()
    with tarfile.open(new) as tar:
        handle = tar.extractfile("rbee-0.1.0-py3-none-any.whl")
        assert handle is not None and handle.read() == b"rebuilt"
