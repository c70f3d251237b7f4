"""Operations made to be shown before pyinfra's confirmation, and work done only after it.

pyinfra makes every operation of a run before it shows the detected changes and asks to go on, so work done while
the operations are made (a model fetch, an engine build) would happen before the answer. ``when_executing`` adds
an operation that changes nothing while pyinfra looks for changes (a plan shows nothing for it) and calls its
function on the host when it executes; the operations that function calls run at once (pyinfra's nested
operations), and the host fails when one of them does. ``made_by`` names the operations a function makes, and
``drop`` keeps them from running on the host (pyinfra reports them skipped): those shown before the answer, when
the confirmed run makes its own.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from pyinfra.api.command import FunctionCommand
from pyinfra.api.operation import operation
from pyinfra.context import host, state


@operation(is_idempotent=False, _set_in_op=False)
def when_executing(function: Callable[[], None]) -> Generator[FunctionCommand, None, None]:
    """Call ``function`` (no arguments; the current host is pyinfra's) when the operations execute."""
    if state.is_executing:
        yield FunctionCommand(function, (), {})


def made_by(make: Callable[[], None]) -> list[str]:
    """The operations (their hashes) that ``make`` adds for the current host."""
    first = len(host.op_hash_order)
    make()
    return list(host.op_hash_order[first:])


def drop(op_hashes: list[str]) -> None:
    """Keep operations made earlier from running on the current host: pyinfra reports them skipped there."""
    for op_hash in op_hashes:
        state.ops[host].pop(op_hash, None)
