"""What a generation yields besides plain text: text with log probabilities, or a piece of a tool call.

A plain completion yields ``str`` pieces (the fast path,
:meth:`~rbee_runtime.common.openai_chunks.Formatter.token_sse`); one that asked for ``logprobs`` or must call
a tool yields :class:`Piece` objects, written by :meth:`~rbee_runtime.common.openai_chunks.Formatter.piece_sse`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log probability and UTF-8 bytes, and its best alternatives."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of the answer's tool call: the first carries its ``id`` and ``name``, each a piece of arguments."""

    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Piece:
    """A piece of the answer: text (None with a tool call), a tool call's piece, the log probabilities of its tokens."""

    text: str | None = ""
    tool_call: ToolCallDelta | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


#: What a generation yields.
Output = str | Piece
