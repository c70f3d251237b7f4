"""``rbee plan``'s two human formats: a terminal table with diffs, and markdown for a pull-request comment.

Both show one row per host (status, files, units, models, engine, runtime, services that restart) and then,
per host that changes, each change and the unified diff of each changed text file. Everything shown comes from
``rbee.rollout.plan.Plan`` (redacted already). Text from hosts and from the spec is never markup: the terminal
prints it as plain ``rich.text.Text``, the markdown puts it in code spans and in fences longer than any run of
backticks it holds (so no file can close the fence, open HTML or mention anyone).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rbee.deploy.change_report import FileChange, HostChanges, ModelChange
from rbee.rollout.plan import Plan, PruneHost

COLUMNS = ("files", "units", "models", "engine", "runtime", "restarts")
"""The kinds of change, one column each after the host and its status."""

MAX_CELL_ITEMS = 3
"""A cell lists at most this many things by name; more are counted."""

MARKDOWN_BUDGET = 60_000
"""Characters of diffs a markdown comment holds at most (GitHub refuses comments over 65,536)."""

_SYMBOLS = {"create": "+", "update": "~", "remove": "-", "mode": "~", "owner": "~"}
_BACKTICKS = re.compile(r"`+")


def size_text(size: int | None) -> str:
    """``1.5 MiB`` style (``?``: unknown)."""
    if size is None:
        return "?"
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def _listed(items: list[str], what: str) -> str:
    if not items:
        return "-"
    return ", ".join(items) if len(items) <= MAX_CELL_ITEMS else f"{len(items)} {what}"


def _file_item(change: FileChange) -> str:
    extra = f" ({change.action})" if change.action in ("mode", "owner") else ""
    name = change.label.removeprefix("unit ").removeprefix("launchd ")  # the column says it is a unit
    return f"{_SYMBOLS[change.action]}{name}{extra}"


def _model_item(change: ModelChange) -> str:
    if change.action == "mode":
        return f"~{change.model} (mode)"
    was = f", was {size_text(change.current_bytes)}" if change.current_bytes is not None else ""
    return f"{'+' if change.action == 'add' else '~'}{change.model} ({size_text(change.size_bytes)}{was})"


def cells(found: HostChanges) -> dict[str, str]:
    """The table's cells of one host's changes, by column."""
    files = _listed([_file_item(f) for f in found.files], "files")
    if found.setup:
        files = f"{'' if files == '-' else files + ', '}{len(found.setup)} setup"
    units = [_file_item(u) for u in found.units] + (["reload"] if found.daemon_reload else [])
    restarts = [s.service if s.action == "restart" else f"{s.action} {s.service}" for s in found.restarts]
    return {
        "files": files,
        "units": _listed(units, "units"),
        "models": _listed([_model_item(m) for m in found.models], "models"),
        "engine": f"{found.engine.action} {found.engine.features}" if found.engine else "-",
        "runtime": f"{found.runtime.action} {found.runtime.wheelhouse[:12]}" if found.runtime else "-",
        "restarts": _listed(restarts, "services"),
    }


def status_text(plan: Plan, host: str) -> str:
    status = plan.status(host)
    if status == "changes":
        found = plan.hosts.get(host)
        count = found.count if found is not None and found.pending else len(plan.changes.get(host, []))
        return f"{count} change(s)"
    return {"ok": "up to date", "failing": "cannot be deployed", "unreachable": "unreachable"}[status]


def rows(plan: Plan) -> list[tuple[str, str, dict[str, str]]]:
    """(host, status, cells) of every host, then of every host to prune."""
    empty = dict.fromkeys(COLUMNS, "-")
    out = []
    for host in plan.names():
        found = plan.hosts.get(host)
        out.append((host, status_text(plan, host), cells(found) if found is not None else empty))
    for pruned in plan.prune:
        restarts = "-" if pruned.forget else _listed(pruned.removes, "services")
        out.append((pruned.host, "to forget" if pruned.forget else "to prune", {**empty, "restarts": restarts}))
    return out


def change_lines(found: HostChanges) -> list[tuple[str, FileChange | None]]:
    """Each change of a host as a line, with the file change whose diff follows it (None: no diff)."""
    out: list[tuple[str, FileChange | None]] = []
    for change in (*found.files, *found.units):
        line = f"{_SYMBOLS[change.action]} {change.label} ({change.path}): {change.action}"
        out.append((line + (f", {change.why}" if change.why and change.action != "create" else ""), change))
    if found.daemon_reload:
        out.append(("~ systemd: reload the units", None))
    for model in found.models:
        out.append((f"{'+' if model.action == 'add' else '~'} model {_model_item(model)[1:]}: {model.why}", None))
    if found.engine:
        current = found.engine.current or "none"
        out.append((f"~ engine: {found.engine.action} {found.engine.features} (installed now: {current})", None))
    if found.runtime:
        out.append((f"~ runtime: {found.runtime.action} wheelhouse {found.runtime.wheelhouse[:12]}", None))
    for service in found.services:
        enabled = " (and enable)" if service.enable and service.action != "enable" else ""
        out.append((f"~ {service.action} {service.service}{enabled}: {'; '.join(service.why)}", None))
    out += [(f"~ {line}", None) for line in found.setup]
    return out


def terminal(plan: Plan, console: Console) -> None:
    """The table, then each host's changes and diffs (why a host fails or was not reached goes to stderr)."""
    table = Table(title=_headline(plan), title_justify="left", highlight=False)
    for name in ("host", "status", *COLUMNS):
        table.add_column(name)
    for host, status, row in rows(plan):
        table.add_row(Text(host), Text(status), *(Text(row[c]) for c in COLUMNS))
    console.print(table)
    for host in plan.names():
        found = plan.hosts.get(host)
        if plan.status(host) != "changes":
            continue
        console.print(Text(f"\n{host}: {status_text(plan, host)}", style="bold"))
        if found is None or not found.pending:
            for name in plan.changes.get(host, []):
                console.print(Text(f"  ~ {name}"))
            continue
        for line, change in change_lines(found):
            console.print(Text(f"  {line}"))
            if change is not None and change.note:
                console.print(Text(f"    ({change.note})", style="dim"))
            if change is not None and change.diff:
                for diff_line in change.diff.splitlines():
                    console.print(Text(f"    {diff_line}", style=_diff_style(diff_line)))
    for pruned in plan.prune:
        console.print(Text(f"\n{pruned.host}: {_prune_title(pruned)}", style="bold"))
        for line in _prune_items(pruned, str):
            console.print(Text(f"  - {line}"))


def _prune_title(pruned: PruneHost) -> str:
    if pruned.forget:
        return "to forget (gone for good, --forget): not contacted; its hive deregistered, dropped from the record"
    return "to prune (it left the spec)"


def _prune_items(pruned: PruneHost, show: Callable[[str], str]) -> list[str]:
    """What happens to a host that left the spec, one line each (``show``: how a path or unit is written)."""
    if pruned.forget:
        return ["nothing is sent to it: what still runs there is yours to stop"]
    return [f"stop and remove {show(item)}" for item in pruned.removes]


def _diff_style(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "bold"
    return {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")


def _headline(plan: Plan) -> str:
    names = plan.names()
    changing = [h for h in names if plan.status(h) == "changes"]
    stuck = [h for h in names if plan.status(h) in ("failing", "unreachable")]
    head = f"rbee plan: {len(changing)} of {len(names)} host(s) change" if changing else "rbee plan: nothing to do"
    return (
        head
        + (f"; {len(stuck)} cannot be planned" if stuck else "")
        + (f"; {len(pruned)} to prune" if (pruned := [p for p in plan.prune if not p.forget]) else "")
        + (f"; {len(forgotten)} to forget" if (forgotten := [p for p in plan.prune if p.forget]) else "")
    )


def code(text: str, *, in_table: bool = False) -> str:
    """``text`` as a markdown code span: never markup, a link, HTML or a mention (``|`` escaped in a table)."""
    text = " ".join(text.splitlines()) or " "
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(r) for r in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fenced(text: str, info: str = "diff") -> str:
    """``text`` in a fenced code block no line of it can close (the fence is longer than any backtick run)."""
    fence = "`" * max(3, max((len(r) for r in _BACKTICKS.findall(text)), default=0) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _cell(text: str) -> str:
    return "-" if text == "-" else code(text, in_table=True)


def markdown(plan: Plan, why: Mapping[str, str], budget: int = MARKDOWN_BUDGET) -> str:
    """The plan as a pull-request comment: the table, then a ``<details>`` block per host with its diffs.

    ``budget``: characters of diffs it holds at most; the diffs past it are named, not shown.
    """
    out = [f"### {html.escape(_headline(plan))}", ""]
    out.append("| host | status | " + " | ".join(COLUMNS) + " |")
    out.append("|" + "---|" * (len(COLUMNS) + 2))
    for host, status, row in rows(plan):
        out.append(f"| {code(host, in_table=True)} | {status} | " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |")
    left = budget
    for host in plan.names():
        block, left = _host_block(plan, host, why, left)
        out += block
    for pruned in plan.prune:
        title = html.escape(_prune_title(pruned))
        out += ["", f"<details><summary><b>{html.escape(pruned.host)}</b>: {title}</summary>", ""]
        out += [f"- {line}" for line in _prune_items(pruned, code)]
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


def _host_block(plan: Plan, host: str, why: Mapping[str, str], left: int) -> tuple[list[str], int]:
    """The ``<details>`` block of one host (none when it is up to date), and the diff budget left after it."""
    status = plan.status(host)
    if status == "ok":
        return [], left
    out = ["", f"<details><summary><b>{html.escape(host)}</b>: {html.escape(status_text(plan, host))}</summary>", ""]
    found = plan.hosts.get(host)
    if status == "failing":
        out += [f"- {code(problem)}" for problem in plan.failing.get(host, [])]
    elif status == "unreachable":
        out.append(f"- {code(why.get(host, 'pyinfra could not connect'))}")
    elif found is None or not found.pending:
        out += [f"- {code(name)}" for name in plan.changes.get(host, [])]
    else:
        out, left = _changes_block(out, found, left)
    out += ["", "</details>"]
    return out, left


def _changes_block(out: list[str], found: HostChanges, left: int) -> tuple[list[str], int]:
    diffs: list[tuple[FileChange, str]] = []
    for line, change in change_lines(found):
        out.append(f"- {code(line)}")
        if change is not None and change.note:
            out.append(f"  {code(change.note)}")
        if change is not None and change.diff:
            diffs.append((change, change.diff))
    for change, diff in diffs:
        block = fenced(diff)
        if len(block) <= left:
            out += ["", block]
            left -= len(block)
        else:
            out += ["", f"{code(change.path)}: diff left out (the comment's size limit); run `rbee plan` to see it"]
    return out, left
