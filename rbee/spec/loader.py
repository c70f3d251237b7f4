"""Read a ``cluster.yaml`` into a ``ClusterSpec``, collecting every problem in one pass.

Structure is checked by pydantic; the spec is then repaired as far as possible
(offending keys dropped, broken list items set aside) so that the cross-field
rules of ``rbee.spec.checks`` still run and the operator sees all problems at once.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rbee.spec.checks import RawNames, check_spec, did_you_mean
from rbee.spec.issues import SpecError, SpecIssue, show
from rbee.spec.models import ClusterSpec
from rbee.spec.positions import Mark, PositionMap, YamlSyntaxError, load_yaml_with_positions
from rbee.spec.safe_yaml import MAX_BYTES, YamlLimitError
from rbee.spec.text import text_issues
from rbee.spec.types import MODEL_ID_PATTERN, NAME_PATTERN, VERSION_PATTERN

_LIST_SECTIONS = ("hosts", "models", "placements")
_PATTERN_TEXT = {
    NAME_PATTERN: ("not a valid name", "use lowercase letters, digits and dashes, e.g. gpu-box-1"),
    MODEL_ID_PATTERN: ("not a valid model id", "use letters, digits, '.', '_' and '-', e.g. llama-3-8b"),
    VERSION_PATTERN: ("not a version", "write MAJOR.MINOR.PATCH, e.g. 0.3.36"),
}


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None``, ``list[X]`` or ``Annotated[X, ...]``, if any."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = ClusterSpec
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _unwrap(field.annotation) if field else None
    return model


def _nested_suggestion(parent: type[BaseModel] | None, key: str) -> str:
    """``did you mean ssh.port?`` when an unknown key is close to a key one level down."""
    for name, field in parent.model_fields.items() if parent else []:
        sub = _unwrap(field.annotation)
        if sub is not None and difflib.get_close_matches(key, list(sub.model_fields), n=1, cutoff=0.6):
            close = difflib.get_close_matches(key, list(sub.model_fields), n=1, cutoff=0.6)[0]
            return f"did you mean {name}.{close}?"
    return ""


def _issue_from_error(err: ErrorDetails) -> SpecIssue:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        key = str(loc[-1])
        hint = did_you_mean(key, allowed)
        if not hint.startswith("did you mean"):
            hint = _nested_suggestion(parent, key) or hint
        return SpecIssue(loc, f"unknown key {show(key)}", hint=hint, at_key=True, kind="extra")
    if kind == "missing":
        return SpecIssue(
            loc, f"required key '{loc[-1]}' is missing", hint=f"add {loc[-1]}: ...", at_key=True, kind="missing"
        )
    if kind == "spec":
        return SpecIssue(loc, err["msg"], value, str(ctx.get("hint", "")))
    if kind == "literal_error":
        choices = [c.strip(" '") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else f"choose one of: {', '.join(choices)}"
        return SpecIssue(loc, f"must be one of {', '.join(choices)}", value, hint)
    if kind == "string_pattern_mismatch" and str(ctx.get("pattern")) in _PATTERN_TEXT:
        message, hint = _PATTERN_TEXT[str(ctx["pattern"])]
        return SpecIssue(loc, message, value, hint)
    message = err["msg"]
    message = message[0].lower() + message[1:] if message else "invalid value"
    message = message.replace("input should be", "should be")
    hint = "use a port between 1 and 65535" if loc and loc[-1] == "port" else ""
    return SpecIssue(loc, message, value, hint)


def _remove_at(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Delete the deepest existing element on ``loc`` so its default applies; False if nothing to delete."""
    node, parent, last = data, None, None
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            parent, last, node = node, part, node[part]
        else:
            break
    if parent is None or last is None:
        return False
    if parent is data and last in _LIST_SECTIONS:
        return False  # a whole section is broken: nothing to salvage for the cross-field checks
    if isinstance(parent, list):
        if len(loc) >= 2 and loc[0] in _LIST_SECTIONS and parent is data.get(loc[0]):
            return False  # the list item itself is broken: set aside by the caller
        del parent[int(last)]
    else:
        del parent[last]
    return True


def _salvage(data: dict[str, Any]) -> tuple[ClusterSpec | None, dict[str, list[int]]]:
    """Best-effort valid spec from a broken one, and for each list section the original item indices."""
    data = copy.deepcopy(data)
    origin = {k: list(range(len(data[k]))) for k in _LIST_SECTIONS if isinstance(data.get(k), list)}
    for _ in range(10):
        try:
            return ClusterSpec.model_validate(data), origin
        except ValidationError as exc:
            drop: dict[str, set[int]] = defaultdict(set)
            for err in exc.errors():
                loc = tuple(err["loc"])
                if err["type"] == "missing" and len(loc) == 1 and loc[0] == "cluster":
                    data["cluster"] = "unnamed"
                elif err["type"] == "missing" and len(loc) >= 3 and loc[0] in _LIST_SECTIONS:
                    drop[str(loc[0])].add(int(loc[1]))
                elif not _remove_at(data, loc):
                    if len(loc) >= 2 and loc[0] in _LIST_SECTIONS and isinstance(loc[1], int):
                        drop[str(loc[0])].add(loc[1])
                    else:
                        return None, origin
            for section, indices in drop.items():
                data[section] = [x for i, x in enumerate(data[section]) if i not in indices]
                origin[section] = [o for i, o in enumerate(origin[section]) if i not in indices]
    return None, origin


def _drop_misspelt_missing(issues: list[SpecIssue]) -> list[SpecIssue]:
    """A missing key whose misspelling is reported as unknown is one problem, not two."""
    suggested = {
        (*i.path[:-1], i.hint.removeprefix("did you mean '").removesuffix("'?"))
        for i in issues
        if i.kind == "extra" and i.hint.startswith("did you mean '")
    }
    return [i for i in issues if not (i.kind == "missing" and i.path in suggested)]


def _raw_names(data: dict[str, Any], section: str, key: str) -> set[str]:
    items = data.get(section)
    if not isinstance(items, list):
        return set()
    return {str(item[key]) for item in items if isinstance(item, dict) and isinstance(item.get(key), str)}


def _remap(issue: SpecIssue, origin: dict[str, list[int]]) -> SpecIssue:
    path = issue.path
    if len(path) >= 2 and path[0] in origin and isinstance(path[1], int):
        issue.path = (path[0], origin[str(path[0])][path[1]], *path[2:])
    return issue


def _locate(issues: list[SpecIssue], positions: PositionMap) -> None:
    for issue in issues:
        if issue.at_key and issue.path in positions.keys:
            issue.mark = positions.key_of(issue.path)
        elif issue.at_key:
            issue.mark = positions.value_of(issue.path[:-1])
        else:
            issue.mark = positions.value_of(issue.path)


def parse_spec(text: str, filename: str = "cluster.yaml", base_dir: Path | None = None) -> ClusterSpec:
    """Validate spec text; raise ``SpecError`` listing every problem."""
    base_dir = base_dir or Path.cwd()
    try:
        data, positions = load_yaml_with_positions(text)
    except YamlSyntaxError as exc:
        issue = SpecIssue((), f"YAML syntax error: {exc.problem}", hint="fix the YAML at this line", mark=exc.mark)
        raise SpecError(filename, [issue]) from None
    except YamlLimitError as exc:
        where = Mark(exc.mark.line + 1, exc.mark.column + 1) if exc.mark else Mark(1, 1)
        raise SpecError(filename, [SpecIssue((), exc.problem, hint=exc.hint, mark=where)]) from None
    if data is None:
        raise SpecError(
            filename, [SpecIssue((), "the spec is empty", hint="start from inventory/cluster.example.yaml")]
        )
    if not isinstance(data, dict):
        raise SpecError(
            filename,
            [
                SpecIssue(
                    (),
                    "the spec must be a mapping (cluster:, hosts:, ...)",
                    type(data).__name__,
                    "start from inventory/cluster.example.yaml",
                )
            ],
        )
    issues = [
        SpecIssue(path, "duplicate key (the later value would silently win)", hint="keep one of them", at_key=True)
        for path, _ in positions.duplicate_keys
    ]
    hostile = list(text_issues(data))  # control characters, template syntax: in any string, keys included
    issues.extend(hostile)
    flagged = {i.path for i in hostile}
    spec: ClusterSpec | None = None
    origin: dict[str, list[int]] = {}
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        found = [_issue_from_error(err) for err in exc.errors()]
        issues.extend(_drop_misspelt_missing([i for i in found if i.path not in flagged]))
        salvaged, origin = _salvage(data)
        if salvaged is not None:
            raw = RawNames(
                hosts=_raw_names(data, "hosts", "name"),
                models=_raw_names(data, "models", "id"),
                hosts_complete=len(origin.get("hosts", [])) == len(data.get("hosts") or []),
            )
            issues.extend(_remap(i, origin) for i in check_spec(salvaged, base_dir, raw))
    else:
        issues.extend(check_spec(spec, base_dir))
    if issues:
        _locate(issues, positions)
        for issue, (path, mark) in zip(issues, positions.duplicate_keys, strict=False):
            if issue.path == path:
                issue.mark = mark
        raise SpecError(filename, issues)
    assert spec is not None
    return spec


def load_spec(path: Path | str) -> ClusterSpec:
    """Read and validate a spec file (``OSError`` if it cannot be read, ``SpecError`` if it is wrong)."""
    path = Path(path)
    with path.open("rb") as file:
        raw = file.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        issue = SpecIssue((), f"the file is larger than {MAX_BYTES} bytes", hint="a spec is a few KiB")
        raise SpecError(str(path), [issue])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        issue = SpecIssue((), f"not UTF-8 text (byte {exc.start})", hint="save the spec as UTF-8", mark=Mark(line, 1))
        raise SpecError(str(path), [issue]) from None
    return parse_spec(text, str(path), path.parent)
