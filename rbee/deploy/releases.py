"""Shell steps that keep a host's running release aside and put it back (rolling deploys).

A release on a host is: the venv (``<prefix>/venv``) with its install stamps, the configs
(``/etc/rbee``), the rbee systemd units, ``<prefix>/release.json`` and the model files. The snapshot
uses hard links for the venv (pip replaces files, it does not rewrite them, so the kept copy stays
intact) and for the models (a deploy renames a changed model over the old one, ``rbee/deploys/atomic.py``,
so the kept link still holds the old bytes): cheap. The kept models live in ``<models>/.rbee-previous``,
on the models' own filesystem (a separate disk mounted there is common); a changed model takes twice
its size on disk until the next snapshot.
"""

from __future__ import annotations

import shlex

from rbee.deploy.layout import CONFIG_DIR, HostLayout

UNITS = "/etc/systemd/system"
TEMP_MARK = ".rbee-tmp-"
"""What an rbee temp file's name holds (``rbee/deploys/atomic.py``): a leftover is removed by the next deploy."""


def kept(layout: HostLayout) -> str:
    """Where the previous release is kept."""
    return f"{layout.prefix}/releases/previous"


def kept_models(layout: HostLayout) -> str:
    """Where the models of the previous release are kept (hard links, beside the live files)."""
    return f"{layout.models}/.rbee-previous"


def keep_models_script(layout: HostLayout) -> str:
    """Hard-link every live model into ``.rbee-previous`` (replacing what an older snapshot kept)."""
    models, keep = shlex.quote(layout.models), shlex.quote(kept_models(layout))
    return f"""if [ -d {models} ]; then
  rm -rf {keep}.new && mkdir {keep}.new
  for model in {models}/*.gguf; do
    if [ -f "$model" ]; then ln "$model" {keep}.new/; fi
  done
  rm -rf {keep} && mv {keep}.new {keep}
fi
"""


def restore_models_script(layout: HostLayout) -> str:
    """Put each kept model back where the live file differs (another inode): link beside it, rename over it."""
    models, keep = shlex.quote(layout.models), shlex.quote(kept_models(layout))
    return f"""if [ -d {keep} ]; then
  for model in {keep}/*.gguf; do
    [ -f "$model" ] || continue
    live={models}/"$(basename "$model")"
    if [ ! "$model" -ef "$live" ]; then
      temp={models}/".$(basename "$model"){TEMP_MARK}rollback"
      ln -f "$model" "$temp" && mv -f "$temp" "$live"
    fi
  done
  sync {models} 2>/dev/null || sync
fi
"""


def snapshot_script(layout: HostLayout) -> str:
    """Copy the live release into ``releases/previous`` (nothing when the host was never deployed)."""
    keep, prefix = shlex.quote(kept(layout)), shlex.quote(layout.prefix)
    return f"""set -e
if [ ! -f {prefix}/release.json ]; then echo "no release to keep"; exit 0; fi
rm -rf {keep}.new && mkdir -p {keep}.new/units
cp -al {shlex.quote(layout.venv)} {keep}.new/venv
cp -a {CONFIG_DIR} {keep}.new/etc
cp -a {prefix}/release.json {keep}.new/release.json
cp -a {shlex.quote(layout.stamps)} {keep}.new/stamps
cp -a {UNITS}/rbee-*.service {keep}.new/units/ 2>/dev/null || true
{keep_models_script(layout)}rm -rf {keep} && mv {keep}.new {keep}
echo "kept $(sed -n 's/.*"git_commit": "\\(.\\{{12\\}}\\).*/\\1/p' {keep}/release.json)"
"""


def rollback_script(layout: HostLayout) -> str:
    """Stop rbee, restore ``releases/previous``, start again exactly the services of that release."""
    keep, prefix = shlex.quote(kept(layout)), shlex.quote(layout.prefix)
    workers = f"{CONFIG_DIR}/workers"
    return f"""set -e
if [ ! -d {keep} ]; then echo "no previous release to roll back to" >&2; exit 1; fi
for env in {workers}/*.env; do
  [ -e "$env" ] || continue
  systemctl disable --now "rbee-worker@$(basename "$env" .env).service" || true
done
systemctl stop rbee-hive.service rbee-queen.service 2>/dev/null || true
rm -rf {shlex.quote(layout.venv)} && cp -al {keep}/venv {shlex.quote(layout.venv)}
rm -rf {CONFIG_DIR} && cp -a {keep}/etc {CONFIG_DIR}
cp -a {keep}/release.json {prefix}/release.json
rm -rf {shlex.quote(layout.stamps)} && cp -a {keep}/stamps {shlex.quote(layout.stamps)}
{restore_models_script(layout)}cp -a {keep}/units/. {UNITS}/
systemctl daemon-reload
[ -f {UNITS}/rbee-queen.service ] && systemctl enable --now rbee-queen.service
systemctl enable --now rbee-hive.service
for env in {workers}/*.env; do
  [ -e "$env" ] || continue
  systemctl enable --now "rbee-worker@$(basename "$env" .env).service"
done
echo "rolled back"
"""
