"""rbee as a user installs it: its wheel built from this checkout, installed into a fresh venv outside the checkout.

``installed`` (once per session): the wheel rbee is released as (``rbee.deploy.rbee_wheel.DIST_FOLDERS``:
the packages and the Ansible collection), its version marked ``+pkgtest`` so that whatever runs it, here or
on a host, shows that it came from this wheel; a venv in a temp folder with ``rbee[deploy,ansible,engine]``
installed by uv (the engine from the wheel cache, built once when missing; the rest from the package index, or
uv's cache). Every command
runs from another temp folder, with ``PYTHONPATH`` unset, the venv's ``bin`` first on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from rbee.cli.engine_cmd import DEFAULT_VERSION
from rbee.deploy.rbee_wheel import DIST_FOLDERS, SOURCE_FILES, build_from_source
from rbee.engine.features import local_feature_set
from rbee.engine.wheelcache import build_wheel

ROOT = Path(__file__).parents[2]
MARK = "+pkgtest"
"""The local version label of the test's wheel: ``0.1.0+pkgtest``."""


@dataclass
class Installed:
    """A venv with the wheel installed, and the folder (outside the checkout) commands run in."""

    venv: Path
    home: Path
    wheel: Path
    version: str

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a user's shell with the venv first on ``PATH`` (no ``PYTHONPATH``, no other venv)."""
        kept = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        return {**kept, "PATH": f"{self.venv / 'bin'}:{kept.get('PATH', '/usr/bin:/bin')}", **extra}

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        """``ARGS[0]`` of the venv (``rbee``, ``python``, ``pyinfra``...) with ``ARGS[1:]``, in ``home``."""
        command = [self.bin(args[0]), *args[1:]]
        return subprocess.run(command, cwd=self.home, env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip


def _engine_wheel_folder() -> Path:
    """The folder of this machine's CPU engine wheel (built once into the wheel cache when missing)."""
    return build_wheel(local_feature_set("cpu", DEFAULT_VERSION)).parent


def _marked_source(tree: Path) -> str:
    """The checkout's released files copied into ``tree``, the version marked; the marked version."""
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, tree / name)
    for folder in DIST_FOLDERS:
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pyproject = (tree / "pyproject.toml").read_text()
    line = next(line for line in pyproject.splitlines() if line.startswith("version = "))
    version = line.split('"')[1] + MARK
    (tree / "pyproject.toml").write_text(pyproject.replace(line, f'version = "{version}"', 1))
    return version


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("package")
    assert ROOT.resolve() not in base.resolve().parents
    (base / "src").mkdir()
    version = _marked_source(base / "src")
    wheel = build_from_source(base / "src", base / "dist", DIST_FOLDERS)
    engine = _engine_wheel_folder()
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, cwd=base, capture_output=True)
    home = base / "home"
    home.mkdir()
    made = Installed(venv, home, wheel, version)
    uv = str(Path(sys.executable).parent / "uv")  # as pip would (uv: the dev extra's; seconds instead of ~35 s)
    done = subprocess.run([uv, "pip", "install", "--quiet", "--python", made.bin("python"), "--find-links", str(engine),
                           f"{wheel}[deploy,ansible,engine]"], cwd=home, env=made.env(), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return made
