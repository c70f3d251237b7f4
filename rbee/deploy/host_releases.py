"""A host's kept releases: the program that keeps, lists, prunes and restores them, run ON the host.

Standard library only, Python 3.9+: ``rbee.deploy.releases.host_command`` ships this file's text as
``python3 -c <text> ACTION JSON``; the unit tests import it and run it on folders.

On the host (``<prefix>/releases``, root's only: the configs hold credentials)::

    <id>/venv          the venv, as hard links (pip replaces files, it never rewrites one: the links keep the bytes)
    <id>/etc           /etc/rbee (configs, credentials, worker envs), copied
    <id>/units         the rbee unit files, copied
    <id>/stamps        the stamps (what was installed, what each service started from, verified uploads)
    <id>/release.json  the release record (``rbee.deploy.release_record``)
    <id>/provenance.json  the commits it was made from (also live as ``<prefix>/provenance.json``)
    <id>/created       when it was kept (epoch seconds)
    current            symlink to the running release, switched by rename (atomic)
    history            one line per switch: ``<epoch> <id> <why>``
    switch             the last switch: ``<from> <to>`` (what a failed rollout returns to)
    <models>/.rbee-releases/<id>/  the release's model files, as hard links (same filesystem as the models)

``restore`` brings the live install back to a kept release file by file (each written beside its target and
renamed over it), restarts only the services whose inputs differ (their ``service-<unit>`` stamps), stops the
ones the release does not run, and switches ``current`` last. Re-running it after an interruption finishes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RELEASE_ID = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z.]{0,39}-[0-9a-f]{12}\Z")
"""A release id: ``<rbee version>-<12 hex digits>`` (``rbee.deploy.releases.release_id``); nothing else is a path."""

TEMP = ".rbee-tmp-"
SERVICE_STAMP = "service-"
RELEASE_STAMP = "release"
ADOPTED = "adopted"
"""The version part of the id of a release kept after the fact (``Store.adopt``)."""
HISTORY_LINES = 500


class ReleaseError(Exception):
    """What the caller must hear (printed on stderr, exit 3)."""


# ---------------------------------------------------------------------------------------------------- file trees


def _own(path: Path, st: os.stat_result) -> None:
    os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    if not path.is_symlink():
        path.chmod(st.st_mode & 0o7777)


def copy_tree(src: Path, dst: Path, link: bool = False) -> None:
    """``cp -a`` (``link``: ``cp -al``, files hard-linked) of the folder ``src`` to the new folder ``dst``."""
    dst.mkdir()
    for source in sorted(src.iterdir()):
        target = dst / source.name
        if source.is_symlink():
            target.symlink_to(source.readlink())
            info = source.lstat()
            os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
        elif source.is_dir():
            copy_tree(source, target, link)
        elif link:
            os.link(source, target)
        else:
            shutil.copy2(source, target)
            _own(target, source.stat())
    _own(dst, src.stat())
    shutil.copystat(src, dst)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _same_file(a: Path, b: Path) -> bool:
    """Same content, mode and owner (a symlink: same target)."""
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and a.readlink() == b.readlink()
    sa, sb = a.stat(), b.stat()
    if (sa.st_size, sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_size, sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    return a.read_bytes() == b.read_bytes()


def _temp(path: Path, why: str) -> Path:
    """The temp file beside ``path`` (a name the deploy's leftover sweep knows: ``.<name>.rbee-tmp-<why>``)."""
    return path.with_name(f".{path.name}{TEMP}{why}")


def _put(src: Path, dst: Path) -> None:
    """Copy ``src`` beside ``dst`` and rename it over (a reader sees the old file or the new one, never half)."""
    temp = _temp(dst, "release")
    _remove(temp)
    if src.is_symlink():
        temp.symlink_to(src.readlink())
    else:
        shutil.copy2(src, temp)
        _own(temp, src.stat())
    temp.replace(dst)


def sync_tree(src: Path, dst: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Make the folder ``dst`` hold what ``src`` holds, file by file (only what differs is written); the paths
    changed, relative to ``dst``. Names in ``keep`` (at the top) are left alone when ``src`` lacks them."""
    changed: list[str] = []
    dst.mkdir(parents=True, exist_ok=True)
    _own(dst, src.stat())
    wanted = {p.name for p in src.iterdir()}
    for stale in sorted(p for p in dst.iterdir() if p.name not in wanted and p.name not in keep):
        _remove(stale)
        changed.append(stale.name)
    for source in sorted(src.iterdir()):
        target = dst / source.name
        if source.is_dir() and not source.is_symlink():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                _remove(target)
            changed += [f"{source.name}/{p}" for p in sync_tree(source, target)]
        elif not (target.exists() or target.is_symlink()) or target.is_dir() or not _same_file(source, target):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            _put(source, target)
            changed.append(source.name)
    return changed


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """``text`` into ``path``: a temp file beside it, flushed, renamed over it."""
    temp = _temp(path, "release")
    with temp.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    temp.chmod(mode)
    temp.replace(path)


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text()
    except OSError:
        return default


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when it is missing or holds something else)."""
    try:
        found = json.loads(_read(path, "{}"))
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


# ---------------------------------------------------------------------------------------------------- the store


class Store:
    """The releases of one host. ``paths``: prefix, models, config, units (folder), unit_name (prefix and suffix of
    rbee's unit files there), systemctl (the command, as a list)."""

    def __init__(self, paths: dict[str, Any]) -> None:
        self.prefix = Path(paths["prefix"])
        self.models = Path(paths["models"])
        self.config = Path(paths["config"])
        self.units = Path(paths["units"])
        self.unit_prefix, self.unit_suffix = (str(s) for s in paths.get("unit_name", ["rbee-", ".service"]))
        self.systemctl = [str(a) for a in paths.get("systemctl", ["systemctl"])]
        self.root = self.prefix / "releases"
        self.kept_models = self.models / ".rbee-releases"
        self.venv = self.prefix / "venv"
        self.stamps = self.prefix / "stamps"
        self.record = self.prefix / "release.json"
        self.origin = self.prefix / "provenance.json"

    # -- reading

    def path(self, release: str) -> Path:
        """The folder of ``release`` (``ReleaseError`` for anything that is not a release id)."""
        if not RELEASE_ID.match(release):
            raise ReleaseError(f"not a release id: {release!r}")
        return self.root / release

    def ids(self) -> list[str]:
        """The kept releases (folders named like a release id)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if RELEASE_ID.match(p.name) and p.is_dir())

    def current(self) -> str:
        """The running release's id ("" when none was kept)."""
        try:
            target = str((self.root / "current").readlink())
        except OSError:
            return ""
        return target if RELEASE_ID.match(target) else ""

    def last_switch(self) -> tuple[str, str]:
        parts = _read(self.root / "switch").split()
        return (parts[0], parts[1]) if len(parts) == 2 else ("", "")

    def history(self) -> list[tuple[float, str, str]]:
        """Each switch of ``current``: (when, to which release, why), oldest first."""
        out = []
        for line in _read(self.root / "history").splitlines():
            parts = line.split()
            if len(parts) >= 2 and RELEASE_ID.match(parts[1]):
                try:
                    out.append((float(parts[0]), parts[1], " ".join(parts[2:])))
                except ValueError:
                    continue
        return out

    def _created(self, release: str) -> float:
        try:
            return float(_read(self.path(release) / "created", "0").strip() or 0)
        except ValueError:
            return 0.0

    def recency(self) -> list[str]:
        """Kept releases, the most recently running first (never running: by when kept)."""
        last = {release: when for when, release, _ in self.history()}
        created = {r: self._created(r) for r in self.ids()}
        return sorted(created, key=lambda r: (last.get(r, created[r]), created[r], r), reverse=True)

    def describe(self, release: str) -> dict[str, Any]:
        """One release as ``rbee releases`` shows it: id, created, its record and its workers."""
        folder = self.path(release)
        record, origin = _json_object(folder / "release.json"), _json_object(folder / "provenance.json")
        workers = folder / "etc" / "workers"
        names = sorted(p.name[: -len(".env")] for p in workers.glob("*.env")) if workers.is_dir() else []
        return {"id": release, "created": self._created(release), "record": record, "workers": names, "origin": origin}

    def listing(self) -> dict[str, Any]:
        """Everything ``rbee releases`` and ``rbee rollback`` read, the most recently running release first."""
        old, new = self.last_switch()
        return {
            "current": self.current(), "releases": [self.describe(r) for r in self.recency()],
            "switch": {"from": old, "to": new}, "live": _read(self.stamps / RELEASE_STAMP).strip(),
            "history": [{"at": when, "id": release, "why": why} for when, release, why in self.history()[-20:]],
        }  # fmt: skip

    # -- keeping

    def keep(
        self, release: str, record: str | None, keep: int, why: str = "deploy", origin: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keep the live install as ``release`` with ``record`` as its ``release.json`` (None: the live one) and
        ``origin`` as its ``provenance.json`` (None: the live one, if any), make it current, write both live (the
        record last: a keep cut short is redone by the next deploy, which still finds the record different), prune
        to the ``keep`` most recent (and the one a failed rollout returns to)."""
        folder = self.path(release)
        if record is None:
            if not self.record.is_file():
                return {"kept": "", "why": "no release on this host"}
            record = _read(self.record)
        origin_text = json.dumps(origin, indent=1, sort_keys=True) + "\n" if origin is not None else _read(self.origin)
        for legacy in (self.root / "previous", self.models / ".rbee-previous"):
            _remove(legacy)  # the single kept release of rbee before release history
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        temp = self.root / f".{release}{TEMP}keep"
        _remove(temp)
        temp.mkdir(0o700)
        if self.venv.is_dir():
            copy_tree(self.venv, temp / "venv", link=True)
        if self.config.is_dir():
            copy_tree(self.config, temp / "etc")
        (temp / "units").mkdir()
        for unit in self._unit_files(self.units):
            shutil.copy2(unit, temp / "units" / unit.name)
            _own(temp / "units" / unit.name, unit.stat())
        if self.stamps.is_dir():
            copy_tree(self.stamps, temp / "stamps")
            _write(temp / "stamps" / RELEASE_STAMP, release + "\n", 0o600)
        _write(temp / "release.json", record)
        if origin_text:
            _write(temp / "provenance.json", origin_text)
        _write(temp / "created", f"{time.time():.3f}\n")
        models_temp = self._keep_models(release, record)
        _remove(folder)
        temp.replace(folder)
        if models_temp is not None:
            _remove(self.kept_models / release)
            models_temp.replace(self.kept_models / release)
        self.switch(release, why)
        if self.stamps.is_dir():
            _write(self.stamps / RELEASE_STAMP, release + "\n", 0o600)
        if origin_text and _read(self.origin) != origin_text:
            _write(self.origin, origin_text)
        if _read(self.record) != record:
            _write(self.record, record)
        pruned = self.prune(keep)
        os.sync()
        return {"kept": release, "pruned": pruned}

    def adopt(self, keep: int) -> dict[str, Any]:
        """Keep the live release when it was never kept (a record, no release stamp: rbee before release history, or
        the Ansible path), as ``adopted-<12 hex digits of its record's sha256>``."""
        if not self.record.is_file() or (self.stamps / RELEASE_STAMP).is_file():
            return {"kept": "", "why": "a release is kept already, or none runs"}
        digest = hashlib.sha256(self.record.read_bytes()).hexdigest()
        origin = _json_object(self.origin)  # kept by rbee deploy only: another deploy's (Ansible's) release has none
        return self.keep(f"{ADOPTED}-{digest[:12]}", None, keep, why="adopted", origin=origin)

    def _unit_files(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob(f"{self.unit_prefix}*{self.unit_suffix}") if p.is_file())

    def _keep_models(self, release: str, record: str) -> Path | None:
        """Hard links of the record's models in ``<models>/.rbee-releases/.<id>.rbee-tmp-keep`` (None: no model)."""
        try:
            listed = json.loads(record).get("models") or {}
        except (ValueError, AttributeError):
            listed = {}
        names = [f"{m}.gguf" for m in listed if isinstance(m, str) and "/" not in m and not m.startswith(".")]
        files = [self.models / n for n in names if (self.models / n).is_file()]
        if not files:
            return None
        self.kept_models.mkdir(exist_ok=True)
        self.kept_models.chmod(0o700)
        temp = self.kept_models / f".{release}{TEMP}keep"
        _remove(temp)
        temp.mkdir(0o700)
        for model in files:
            os.link(model, temp / model.name)
        return temp

    def switch(self, release: str, why: str) -> None:
        """Point ``current`` at ``release`` (a symlink renamed over the old one) and log the switch. Kept again
        under the same id, the switch reads ``<id> <id>``: a failed rollout then stays on it (what ran before is
        that id's previous content, gone)."""
        before = self.current()
        if before == release:
            _write(self.root / "switch", f"{release} {release}\n")
            return
        link = self.root / f".current{TEMP}switch"
        _remove(link)
        link.symlink_to(release)
        link.replace(self.root / "current")
        _write(self.root / "switch", f"{before or '-'} {release}\n")
        lines = _read(self.root / "history").splitlines()[-(HISTORY_LINES - 1) :]
        lines.append(f"{time.time():.3f} {release} {why}")
        _write(self.root / "history", "\n".join(lines) + "\n", 0o600)

    def prune(self, keep: int) -> list[str]:
        """Remove all but the ``keep`` most recent releases; the current one and the one the last switch came
        from (a failed rollout returns to it) stay. Leftovers of an interrupted keep go too."""
        spared = set(self.recency()[: max(keep, 1)]) | {self.current(), self.last_switch()[0]}
        pruned = [r for r in self.ids() if r not in spared]
        for release in pruned:
            _remove(self.kept_models / release)
            _remove(self.path(release))
        for folder in (self.root, self.kept_models):
            if folder.is_dir():
                for leftover in folder.glob(f".*{TEMP}*"):
                    _remove(leftover)
        return pruned

    # -- restoring

    def resolve(self, target: str) -> str:
        """``undo:<id>``: what a rollout that tried to make ``<id>`` current returns to (the release before the
        switch to it, or the current one when it never switched); else ``target`` itself, which must be kept."""
        if target.startswith("undo:"):
            tried, current = target[len("undo:") :], self.current()
            before, after = self.last_switch()
            release = before if current == tried and after == tried and RELEASE_ID.match(before) else current
            if not release:
                raise ReleaseError("no kept release to return to")
        else:
            release = target
        if release not in self.ids():
            kept = ", ".join(self.recency()) or "none"
            raise ReleaseError(f"release {release} is not kept on this host (kept: {kept})")
        return release

    def restore(self, target: str, dry: bool = False) -> dict[str, Any]:
        """Bring the live install back to the kept release ``target`` (see the module docstring); restart only what
        differs. ``dry``: only say what it would do."""
        release = self.resolve(target)
        folder = self.path(release)
        kept_stamps, live_stamps = self._stamps(folder / "stamps"), self._stamps(self.stamps)
        services = sorted((n[len(SERVICE_STAMP) :] for n in kept_stamps if n.startswith(SERVICE_STAMP)), key=_order)
        running = {n[len(SERVICE_STAMP) :] for n in live_stamps if n.startswith(SERVICE_STAMP)}
        running |= {f"rbee-worker@{p.name[:-4]}.service" for p in (self.config / "workers").glob("*.env")}
        stop = sorted(running - set(services))
        restart = [s for s in services if live_stamps.get(SERVICE_STAMP + s) != kept_stamps[SERVICE_STAMP + s]]
        venv = not self.venv.is_dir() or any(live_stamps.get(k) != kept_stamps.get(k) for k in ("runtime", "engine"))
        plan: dict[str, Any] = {"release": release, "stop": stop, "restart": restart, "venv": venv}
        if dry:
            return plan
        if self.systemctl == ["systemctl"] and not Path("/run/systemd/system").is_dir():
            raise ReleaseError("rollback needs systemd (a launchd host is not supported yet)")
        for unit in stop:
            self._systemctl("disable", "--now", unit, check=False)
        if venv and (folder / "venv").is_dir():
            self._swap_venv(folder / "venv")
        models = self._restore_models(release)
        config = sync_tree(folder / "etc", self.config) if (folder / "etc").is_dir() else []
        units = self._restore_units(folder / "units")
        started_from = tuple(n for n in live_stamps if n.startswith(SERVICE_STAMP))  # rewritten after each (re)start
        if (folder / "stamps").is_dir():
            sync_tree(folder / "stamps", self.stamps, keep=started_from)
        if (folder / "provenance.json").is_file():
            _put(folder / "provenance.json", self.origin)
        else:
            _remove(self.origin)
        _put(folder / "release.json", self.record)
        if units:
            self._systemctl("daemon-reload")
        for unit in services:
            self._systemctl("reset-failed", unit, check=False)  # the rollback's own start is not refused by the limit
            if unit in restart:
                self._systemctl("enable", unit)
                self._systemctl("restart", unit)
            else:
                self._systemctl("enable", "--now", unit)
            _put(folder / "stamps" / f"{SERVICE_STAMP}{unit}", self.stamps / f"{SERVICE_STAMP}{unit}")
        for name in started_from:
            if name not in kept_stamps:
                _remove(self.stamps / name)
        self.switch(release, "rollback")
        os.sync()
        plan.update({"models": models, "config": config, "units": units})
        return plan

    def _stamps(self, folder: Path) -> dict[str, str]:
        if not folder.is_dir():
            return {}
        return {p.name: _read(p).strip() for p in folder.iterdir() if TEMP not in p.name}

    def _systemctl(self, *args: str, check: bool = True) -> None:
        done = subprocess.run([*self.systemctl, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if check and done.returncode != 0:
            raise ReleaseError(f"systemctl {' '.join(args)}: {done.stdout.decode(errors='replace').strip()}")

    def _swap_venv(self, kept: Path) -> None:
        """The kept venv (hard links) in place of the live one: made beside it, then two renames."""
        fresh, old = _temp(self.venv, "rollback"), _temp(self.venv, "old")
        _remove(fresh)
        _remove(old)
        copy_tree(kept, fresh, link=True)
        if self.venv.is_dir():
            self.venv.replace(old)
        fresh.replace(self.venv)
        _remove(old)

    def _restore_models(self, release: str) -> list[str]:
        """Each kept model back where the live file is another inode: linked beside it, renamed over it."""
        folder = self.kept_models / release
        if not folder.is_dir():
            return []
        restored = []
        for kept in sorted(folder.iterdir()):
            live = self.models / kept.name
            if live.exists() and live.samefile(kept):
                continue
            temp = _temp(live, "rollback")
            _remove(temp)
            os.link(kept, temp)
            temp.replace(live)
            restored.append(kept.stem)
        return restored

    def _restore_units(self, kept: Path) -> list[str]:
        """The release's unit files in place, rbee's units it lacks removed; the names changed."""
        wanted = {p.name: p for p in self._unit_files(kept)}
        changed = []
        for live in self._unit_files(self.units):
            if live.name not in wanted:
                live.unlink()
                changed.append(live.name)
        for name, source in wanted.items():
            live = self.units / name
            if not live.exists() or not _same_file(source, live):
                _put(source, live)
                changed.append(name)
        return sorted(changed)


def _order(unit: str) -> tuple[int, str]:
    """The queen, then the hive, then the workers (the order a deploy starts them in)."""
    return ({"rbee-queen.service": 0, "rbee-hive.service": 1}.get(unit, 2), unit)


def main(argv: list[str]) -> int:
    """``ACTION JSON`` (list, keep, adopt, prune, restore): prints JSON; exit 3 and the reason on stderr if refused."""
    if len(argv) != 2:
        print("usage: host_releases ACTION JSON", file=sys.stderr)
        return 2
    action, args = argv[0], json.loads(argv[1])
    store = Store(args["paths"])
    try:
        if action == "list":
            out = store.listing()
        elif action == "keep":
            why = str(args.get("why", "deploy"))
            origin = args.get("origin")
            out = store.keep(
                str(args["release"]),
                args.get("record"),
                int(args["keep"]),
                why,
                origin if isinstance(origin, dict) else None,
            )
        elif action == "adopt":
            out = store.adopt(int(args["keep"]))
        elif action == "prune":
            out = {"pruned": store.prune(int(args["keep"]))}
        elif action == "restore":
            out = store.restore(str(args["target"]), dry=bool(args.get("dry")))
        else:
            raise ReleaseError(f"unknown action {action!r}")
    except ReleaseError as exc:
        print(f"rbee release: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
