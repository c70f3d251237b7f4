"""Prune what left the spec: the hosts a deploy applied before and the spec no longer has (``rbee plan`` lists them,
``rbee deploy`` decommissions them once every batch is healthy; ``--no-prune`` keeps them).

Where the applied hosts come from (``rbee.deploy.applied_hosts``): the record ``<prefix>/applied-hosts.json`` on the
queen's host, written at the end of each ``rbee deploy``. ``read_state`` asks every spec host one read-only command
(the record, where the host holds one, and the queen URL its hive reports to), and ``judge`` decides, without I/O:

- the hosts to prune: recorded, not in the spec;
- whether the queen moves: the record is on another spec host (the queen was there), or, with no record, hives
  report to a queen at another address. That is refused unless ``--move-queen`` (``rbee deploy``): clients lose the
  old endpoint. With it, the old queen is stopped and removed once the new one serves (the host stays a hive); a
  queen's host that left the spec is not reached, so it cannot be pruned in the same deploy;
- a record that is not valid (hostile, truncated, another cluster's) stops the deploy before anything changes,
  naming the file (``--no-prune`` goes on without it).

``finish`` (after the last batch): decommission the hosts to prune (``rbee.deploys.decommission``, one pyinfra run
with an inventory built from the recorded, validated settings), deregister each one's hive at the queen (after its
services stopped, so no heartbeat brings it back), then write the new record on the queen's host when it differs:
the spec's hosts, and the removed hosts not pruned yet (unreachable, failed, or kept by ``--no-prune``), so a
later deploy prunes them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rbee.client import QueenClient, QueenError
from rbee.deploy.applied_hosts import (
    PRUNE_FILE_ENV,
    AppliedHost,
    AppliedHosts,
    AppliedHostsError,
    parse,
    parse_read,
    read_command,
    record_of,
    removed_hosts,
    removes,
    url_host,
    write_command,
)
from rbee.deploy.ssh_check import SshTarget, check_hosts, describe
from rbee.rollout.host_read import read_on_hosts
from rbee.rollout.pyinfra_run import PyinfraRun, run_pyinfra
from rbee.spec import ClusterSpec
from rbee.spec.inventory import connection, inventory_name, queen_url
from rbee.spec.models import HostSpec
from rbee_runtime.common.credentials import hive_credential

Say = Callable[[str], None]


@dataclass
class PruneState:
    """What the spec's hosts told about the applied hosts (``judge``)."""

    record: AppliedHosts | None = None
    record_text: str | None = None
    """The record as read on the queen's host (None: it holds none): a new record equal to it is not written."""
    prune: list[AppliedHost] = field(default_factory=list)
    old_queen: str | None = None
    """A spec host the queen moves away from (``--move-queen``): its queen is removed after the deploy."""
    problems: list[str] = field(default_factory=list)
    """Why the deploy must not go on (nothing changed yet)."""
    notes: list[str] = field(default_factory=list)
    queen_reached: bool = True


def _moved_problem(spec: ClusterSpec, where: str) -> str:
    queen = spec.queen_host.name
    return (
        f"the queen moves to {queen} from {where}: clients of the old endpoint lose it, and hives switch to the new "
        f"one as each batch deploys; run rbee deploy --move-queen to do it (the old queen is stopped and removed once "
        f"{queen}'s serves; a queen's host that left the spec cannot be pruned in that deploy: keep it in the spec "
        "until the queen has moved, then remove it)"
    )


def judge(
    spec: ClusterSpec, answers: dict[str, str], *, move_queen: bool = False, no_prune: bool = False
) -> PruneState:
    """Decide from each spec host's answer to ``read_command`` (host → its output; a host missing did not answer)."""
    queen = spec.queen_host.name
    state = PruneState(queen_reached=queen in answers)
    if not state.queen_reached:
        state.notes.append(f"{queen} (the queen's host) did not answer: the applied hosts are unknown, none is pruned")
    reads = {host: parse_read(text) for host, text in answers.items()}
    records: dict[str, AppliedHosts] = {}
    for host, found in reads.items():
        if found.record is None:
            continue
        try:
            records[host] = parse(found.record, host, spec.cluster)
        except AppliedHostsError as exc:
            fix = "remove it to deploy without pruning (rm), or deploy with --no-prune"
            (state.notes if no_prune else state.problems).append(f"{exc}: {fix}")
    own = records.get(queen)
    elsewhere = [h for h in records if h != queen]
    if own is not None:
        if own.queen != queen:
            state.problems.append(f"{queen}: its applied-hosts record names {own.queen!r} as the queen's host")
            return state
        state.record, state.record_text = own, reads[queen].record
        if elsewhere:  # an older record, left by a queen move that did not finish: removed with that queen
            state.notes.append(f"an older applied-hosts record on {', '.join(elsewhere)} is removed (the queen moved)")
            state.old_queen = elsewhere[0]
    elif len(elsewhere) > 1:
        state.problems.append(f"applied-hosts records on several hosts ({', '.join(elsewhere)}), none on {queen}")
        return state
    elif elsewhere:
        state.record = records[elsewhere[0]]
        state.old_queen = elsewhere[0]
        if not move_queen:
            state.problems.append(_moved_problem(spec, elsewhere[0]))
    else:
        expected = url_host(queen_url(spec))
        away = sorted(h for h, r in reads.items() if r.hive_queen_url and url_host(r.hive_queen_url) != expected)
        if away and not move_queen:
            old = ", ".join(sorted({url_host(reads[h].hive_queen_url) for h in away}))
            state.problems.append(_moved_problem(spec, f"{old} (where the hives of {', '.join(away)} report)"))
        elif away:
            state.notes.append(f"the hives of {', '.join(away)} reported to another queen: that queen is not pruned")
    if state.record is not None:
        state.prune = removed_hosts(state.record, spec)
    return state


def read_state(spec: ClusterSpec, spec_file: Path, *, move_queen: bool = False, no_prune: bool = False) -> PruneState:
    """``judge`` of what every spec host answers to ``read_command`` (one pyinfra run, read-only, in parallel)."""
    answers = read_on_hosts(spec_file, read_command(spec.deploy.prefix))
    return judge(spec, answers, move_queen=move_queen, no_prune=no_prune)


def plan_entries(state: PruneState) -> list[tuple[str, list[str]]]:
    """(host, what pruning it removes) for ``rbee plan``."""
    record = state.record
    return [(h.name, removes(record, h)) for h in state.prune] if record is not None else []


# ------------------------------------------------------------------------------------------------------- finish


@dataclass
class PruneOutcome:
    """How ``finish`` went: the hosts pruned, the ones not pruned (and why), whether the record was written."""

    pruned: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    not_pruned: dict[str, str] = field(default_factory=dict)
    record_written: bool = False
    problems: list[str] = field(default_factory=list)


def _entry(host: HostSpec, base_dir: Path, data: dict[str, Any]) -> dict[str, Any]:
    return {"inventory": inventory_name(host), "data": {**connection(host, base_dir), "rbee_host": host.name, **data}}


def _run(spec_file: Path, entries: list[dict[str, Any]]) -> PyinfraRun:
    """The ``decommission`` entry over ``entries`` (the prune inventory, from a temp file), executed."""
    with tempfile.TemporaryDirectory(prefix="rbee-prune-") as folder:
        path = Path(folder) / "hosts.json"
        path.write_text(json.dumps({"hosts": entries}))
        return run_pyinfra(spec_file, "-y", deploy="decommission", inventory="prune_inventory",
                           env={PRUNE_FILE_ENV: str(path)})  # fmt: skip


def unfinished_hosts(run: PyinfraRun, names: list[str]) -> set[str]:
    """The hosts of ``names`` the run did not finish (all of them when pyinfra stopped before its results)."""
    results = run.document.get("results") if run.document else None
    if not isinstance(results, dict):
        return set(names)
    done = {h for op in results.get("operations", []) for h in op.get("success", []) + op.get("no_change", [])}
    return set(results.get("failed_hosts", [])) | {n for n in names if n not in done}


def _why(hosts: list[AppliedHost], base_dir: Path, run: PyinfraRun) -> dict[str, str]:
    """Why each host failed: the SSH check's classification, else the tail of pyinfra's log."""
    checks = {c.host: c for c in check_hosts([SshTarget.from_spec(h.as_spec_host(), base_dir) for h in hosts])}
    tail = _failure_tail(run)
    return {h.name: describe(checks[h.name]) if checks[h.name].outcome != "ok" else tail for h in hosts}


def _deregister(queen: QueenClient, host: str, secret: str | None) -> str:
    """Deregister ``host``'s hive at the queen; "" when it is gone, else why not."""
    credential = hive_credential(secret, host) if secret else None
    try:
        queen.deregister_hive(host, credential)
        if any(h.hive_id == host for h in queen.hives()):
            return "the queen still lists its hive after the deregistration"
    except QueenError as exc:
        return f"the queen did not deregister its hive: {exc}"
    return ""


def finish(
    spec: ClusterSpec,
    spec_file: Path,
    queen: QueenClient,
    state: PruneState,
    secret: str | None,
    say: Say,
    *,
    prune: bool = True,
    remove_old_queen: bool = True,
    forget: frozenset[str] = frozenset(),
) -> PruneOutcome:
    """After the last batch: prune (``prune``), remove the queen a move left behind (``remove_old_queen``),
    deregister, and write the record (after a failed deploy: neither of the first two, the record all the same).

    ``forget``: hosts to prune (``forgettable``) that are gone for good: nothing is sent to them, their hives are
    deregistered and they leave the record (what still runs there is the operator's to stop)."""
    out = PruneOutcome()
    base_dir = spec_file.resolve().parent
    if not state.queen_reached:
        return out
    for name in sorted(forget & {h.name for h in state.prune}):
        if reason := _deregister(queen, name, secret):
            out.problems.append(f"{name}: forgotten, but {reason}")
        out.forgotten.append(name)
    targets = [h for h in state.prune if h.name not in forget] if prune and state.record is not None else []
    record = state.record
    entries = [
        _entry(h.as_spec_host(), base_dir, {"rbee_action": "decommission", "rbee_prefix": record.prefix})
        for h in targets
        if record is not None
    ]
    if state.old_queen is not None and remove_old_queen:
        entries.append(_entry(spec.host(state.old_queen), base_dir,
                              {"rbee_action": "remove-queen", "rbee_prefix": spec.deploy.prefix}))  # fmt: skip
    if entries:
        say(f"prune: {', '.join(h.name for h in targets) or 'no host'}"
            + (f"; the old queen on {state.old_queen}" if state.old_queen and remove_old_queen else ""))  # fmt: skip
        run = _run(spec_file, entries)
        failed = unfinished_hosts(run, [e["inventory"].rsplit("/", 1)[-1] for e in entries])
        why = _why([h for h in targets if h.name in failed], base_dir, run) if failed else {}
        if state.old_queen in failed:
            out.problems.append(f"{state.old_queen}: the old queen was not removed: {_failure_tail(run)}")
        for host in targets:
            if host.name in failed:
                out.not_pruned[host.name] = why.get(host.name, "failed")
                continue
            if reason := _deregister(queen, host.name, secret):
                out.problems.append(f"{host.name}: decommissioned, but {reason}")
            out.pruned.append(host.name)
    keep = tuple(h.name for h in state.prune if h.name not in out.pruned and h.name not in out.forgotten)
    new = record_of(spec, state.record, keep)
    if state.record_text is None or new.text().strip() != state.record_text.strip():  # pyinfra drops the last newline
        queen_host = spec.queen_host
        command = write_command(spec.deploy.prefix, new)
        wrote = _run(spec_file, [_entry(queen_host, base_dir, {"rbee_action": "record", "rbee_record_command": command,
                                                               "rbee_prefix": spec.deploy.prefix})])  # fmt: skip
        out.record_written = not unfinished_hosts(wrote, [queen_host.name])
        if not out.record_written:
            out.problems.append(f"{queen_host.name}: the applied-hosts record was not written: {_failure_tail(wrote)}")
    return out


def _failure_tail(run: PyinfraRun) -> str:
    return " | ".join(line.strip() for line in run.log.splitlines()[-6:] if line.strip()) or f"exit {run.returncode}"


def forgettable(state: PruneState, names: list[str]) -> list[str]:
    """Why ``rbee deploy --forget`` refuses ``names`` (empty: each is a host to prune): only a host that left the
    spec and is still recorded can be forgotten."""
    to_prune = [h.name for h in state.prune]
    listed = ", ".join(to_prune) or "none"
    return [f"--forget {name[:64]!r}: not a host that left the spec (to prune: {listed})"
            for name in names if name not in to_prune]  # fmt: skip


def report(outcome: PruneOutcome, spec: ClusterSpec) -> tuple[list[str], list[str], bool]:
    """What ``rbee deploy`` says of the prune: lines of what was done, lines of what went wrong, and whether the
    deploy fails for it (a problem, or a host not pruned when ``deploy.on_unreachable`` is ``stop``)."""
    done = [f"pruned {h}: its rbee services stopped and removed, its hive deregistered" for h in outcome.pruned]
    done += [f"forgot {h}: no longer recorded, its hive deregistered; nothing was sent to it (if it comes back, "
             "stop rbee there by hand)" for h in outcome.forgotten]  # fmt: skip
    wrong = [f"{h}: not pruned: {why}; a later deploy tries again (gone for good: rbee deploy --forget {h})"
             for h, why in outcome.not_pruned.items()]  # fmt: skip
    wrong += outcome.problems
    failed = bool(outcome.problems) or (bool(outcome.not_pruned) and spec.deploy.on_unreachable == "stop")
    return done, wrong, failed
