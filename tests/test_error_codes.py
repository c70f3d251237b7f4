"""Error codes: one enum, documented once, the docs generated from it, every error site using it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from rbee_runtime.common.error_codes import DOCS, ErrorCode, documented_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "rbee_runtime"
#: Calls whose code argument must be an ``ErrorCode`` member (or a code passed on), never a string literal.
CODE_ARGUMENT = {"ApiError": (1, "code"), "error_body": (0, "code")}


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(RUNTIME.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def calls(tree: ast.AST, name: str) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called == name:
                yield node


def argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def error_code_member(node: ast.expr | None) -> ErrorCode | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ErrorCode":
        return ErrorCode(node.attr)
    return None


def test_every_code_is_documented_once() -> None:
    assert set(DOCS) == set(ErrorCode)
    for code, doc in DOCS.items():
        assert doc.answers, code
        assert doc.meaning.strip() and "\n" not in doc.meaning and "|" not in doc.meaning, code


def test_docs_api_md_error_table_is_the_generated_one() -> None:
    documented = documented_table((ROOT / "docs/api.md").read_text())
    assert documented is not None, "docs/api.md has no generated error-code table"
    assert documented == markdown_table(), (
        "docs/api.md's error codes differ from rbee_runtime/common/error_codes.py; "
        "run `python -m rbee_runtime.common.error_codes docs/api.md`"
    )


def test_no_error_is_built_with_a_string_literal_code() -> None:
    literal: list[str] = []
    for path, tree in modules():
        for name, (position, keyword) in CODE_ARGUMENT.items():
            for call in calls(tree, name):
                code = argument(call, position, keyword)
                if isinstance(code, ast.Constant | ast.JoinedStr):
                    literal.append(f"{path.relative_to(ROOT)}:{call.lineno}: {name}({ast.unparse(code)}, ...)")
    assert literal == [], "use an ErrorCode member:\n" + "\n".join(literal)


def test_every_code_is_used_by_the_runtime() -> None:
    used = {
        member
        for path, tree in modules()
        if path.name != "error_codes.py"
        for node in ast.walk(tree)
        if (member := error_code_member(node if isinstance(node, ast.Attribute) else None)) is not None
    }
    assert set(ErrorCode) - used == set(), "codes nothing raises: remove them, or say why in DOCS"


def test_documented_statuses_are_those_the_services_raise() -> None:
    """Each ``ApiError(<status literal>, ErrorCode.X, ...)`` in a service's package answers as DOCS says."""
    wrong: list[str] = []
    for path, tree in modules():
        service = path.relative_to(RUNTIME).parts[0]
        if service not in ("queen", "hive", "worker"):
            continue
        for call in calls(tree, "ApiError"):
            status, code = argument(call, 0, "status"), error_code_member(argument(call, 1, "code"))
            if code is None or not (isinstance(status, ast.Constant) and isinstance(status.value, int)):
                continue
            documented = DOCS[code].answers.get(service)
            if documented != status.value:
                wrong.append(f"{path.relative_to(ROOT)}:{call.lineno}: {service} answers {code} with "
                             f"{status.value}, DOCS says {documented}")
    assert wrong == [], "\n".join(wrong)
