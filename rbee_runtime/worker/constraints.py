"""What constrains an answer's text: ``response_format`` (JSON, or JSON matching a schema) and forced tool calls.

Both are llama.cpp grammars built from a JSON schema by llama-cpp-python
(``LlamaGrammar.from_json_schema``, ``JSON_GBNF`` for any JSON object), so even a model that has never seen
JSON answers with JSON that parses and matches. A forced tool call (``tool_choice`` a named function, or
``required`` with one tool) constrains the text to the tool's arguments and streams it as the arguments of
one tool call; ``required`` with several tools constrains it to ``{"name": ..., "arguments": ...}`` of one of
them, and the call is sent once it is complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rbee_runtime.common.contracts import GenerateRequest, ToolSpec
from rbee_runtime.common.pieces import Piece, TokenLogprob, ToolCallDelta

#: The arguments of a tool whose ``parameters`` are not given: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def new_call_id() -> str:
    """A tool call id, as OpenAI's (``call_`` and 24 characters)."""
    return f"call_{secrets.token_hex(12)}"


@dataclass
class Constraint:
    """The grammar of one answer, and how its text becomes the answer's pieces."""

    #: The request field it comes from (named in an error when its schema cannot be turned into a grammar).
    field: str
    #: The JSON schema the text matches (None: any JSON object).
    schema: dict[str, Any] | None
    #: The tools one of which the answer calls (empty: the answer is the text).
    tools: list[ToolSpec] = dataclasses.field(default_factory=list)
    call_id: str = dataclasses.field(default_factory=new_call_id)
    _started: bool = False
    _held: list[str] = dataclasses.field(default_factory=list)
    _held_logprobs: list[TokenLogprob] = dataclasses.field(default_factory=list)

    @property
    def tool_call(self) -> bool:
        return bool(self.tools)

    def pieces(self, text: str, logprobs: list[TokenLogprob]) -> Iterator[Piece]:
        """The pieces of a tool call for a piece of generated text."""
        if len(self.tools) > 1:  # the name is only known once the text is complete
            self._held.append(text)
            self._held_logprobs.extend(logprobs)
            return
        if not self._started:
            self._started = True
            yield Piece(text=None, tool_call=ToolCallDelta(text, self.call_id, self.tools[0].name), logprobs=logprobs)
        elif text or logprobs:
            yield Piece(text=None, tool_call=ToolCallDelta(text), logprobs=logprobs)

    def finish(self) -> Iterator[Piece]:
        """The pieces still held once the generation ended."""
        if len(self.tools) == 1:
            if not self._started:  # nothing generated (cancelled at once)
                yield Piece(text=None, tool_call=ToolCallDelta("", self.call_id, self.tools[0].name))
            return
        name, arguments = _named_call("".join(self._held), [t.name for t in self.tools])
        yield Piece(text=None, tool_call=ToolCallDelta(arguments, self.call_id, name), logprobs=self._held_logprobs)


def _named_call(text: str, names: list[str]) -> tuple[str, str]:
    """Name and arguments of ``{"name": ..., "arguments": ...}`` (text cut short: what can be read of it)."""
    try:
        call = json.loads(text)
        return str(call["name"]), json.dumps(call["arguments"], ensure_ascii=False)
    except (ValueError, KeyError, TypeError):
        found = re.search(r'"name"\s*:\s*"([^"]*)"', text)
        rest = re.search(r'"arguments"\s*:\s*', text)
        return (found.group(1) if found else names[0]), (text[rest.end():] if rest else "")


def _choice_schema(tools: list[ToolSpec]) -> dict[str, Any]:
    """One of the tools: ``{"name": <its name>, "arguments": <its arguments>}``."""
    return {"anyOf": [
        {"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters or ANY_OBJECT},
         "required": ["name", "arguments"], "additionalProperties": False}
        for t in tools
    ]}  # fmt: skip


def constraint_for(request: GenerateRequest) -> Constraint | None:
    """The constraint of a request (None: free text)."""
    tools = request.call_tools
    if len(tools) == 1:
        return Constraint("tools", tools[0].parameters or ANY_OBJECT, tools)
    if tools:
        return Constraint("tools", _choice_schema(tools), tools)
    if request.json_schema is not None:
        return Constraint("response_format", request.json_schema or ANY_OBJECT)
    if request.json_object:
        return Constraint("response_format", None)
    return None


def grammar(llama_cpp: Any, constraint: Constraint) -> Any:
    """The llama.cpp grammar of a constraint (raises what llama-cpp-python raises for a schema it cannot take)."""
    grammars = llama_cpp.llama_grammar
    if constraint.schema is None:
        return grammars.LlamaGrammar.from_string(grammars.JSON_GBNF, verbose=False)
    return grammars.LlamaGrammar.from_json_schema(json.dumps(constraint.schema), verbose=False)
