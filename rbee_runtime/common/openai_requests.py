"""The OpenAI request bodies rbee takes (``POST /v1/completions``, ``POST /v1/chat/completions``).

The queen validates a client's body with these models, then forwards it unchanged to a worker, which
validates it again with the same models (one set of bounds, :mod:`~rbee_runtime.common.limits`) and turns it
into its engine's :class:`~rbee_runtime.common.contracts.GenerateRequest`.

A top-level field these models do not know, or a value rbee cannot honour (``n`` > 1, ``tool_choice`` ``auto``,
``store`` true, ...), is refused (:func:`unsupported`: 400 ``UNSUPPORTED_PARAMETER`` naming the ``param``) rather
than ignored; nested objects ignore unknown keys, as OpenAI clients add some (``refusal``, ``annotations``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rbee_runtime.common.contracts import (
    MAX_SEED,
    ChatMessage,
    GenerateRequest,
    ToolSpec,
    Wire,
    check_stops,
    check_total_chars,
)
from rbee_runtime.common.limits import (
    MAX_EMBEDDING_INPUTS,
    MAX_ID_CHARS,
    MAX_LOGIT_BIAS,
    MAX_MESSAGES,
    MAX_STOP,
    MAX_TEXT_CHARS,
    MAX_TOKENS,
    MAX_TOOLS,
    MAX_TOP_LOGPROBS,
)

#: Tokens generated when a request gives no ``max_tokens`` (the queen's ``default_max_tokens`` overrides it).
DEFAULT_MAX_TOKENS = 256

#: The OpenAI endpoints.
Kind = Literal["completion", "chat", "embedding"]


def _stop_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


#: The pydantic error type of a value rbee cannot honour (answered 400 ``UNSUPPORTED_PARAMETER``, as an unknown
#: field's ``extra_forbidden``).
UNSUPPORTED = "unsupported_parameter"


def unsupported(message: str) -> PydanticCustomError:
    """The validation error of a parameter rbee cannot honour (the field is the ``param``)."""
    return PydanticCustomError(UNSUPPORTED, message)


class StreamOptions(Wire):
    include_usage: bool = False


class _Common(Wire):
    """Fields shared by both OpenAI endpoints; an unknown top-level field is refused (``extra_forbidden``).

    As every :class:`Wire` model: finite numbers and valid Unicode text only; sizes bounded (:mod:`~.limits`).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    #: Accepted, not used (rbee keeps no per-user record).
    user: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    #: Token id (a decimal string) → bias from -100 to 100 added to its logit.
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS)
    #: Only ``false`` (rbee stores no completion).
    store: bool | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise unsupported("rbee generates one choice per request (n=1); send n requests instead")
        return value

    @field_validator("store")
    @classmethod
    def _not_stored(cls, value: bool | None) -> bool | None:
        if value:
            raise unsupported("rbee stores no completion (store must be false or left out)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise ValueError(f"the keys are token ids (decimal integers), not {key[:40]!r}")
        return value

    @property
    def sampling(self) -> dict[str, Any]:
        """The engine's sampling fields of this body."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.engine_seed,
            "stop": _stop_list(self.stop),
            "frequency_penalty": self.frequency_penalty or 0.0,
            "presence_penalty": self.presence_penalty or 0.0,
            "logit_bias": {int(k): v for k, v in (self.logit_bias or {}).items()},
        }

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are supported")
        check_stops(_stop_list(value))
        return value

    @property
    def engine_seed(self) -> int | None:
        """The seed as the engine takes it (an unsigned 32-bit number; OpenAI clients send 64-bit ones)."""
        return None if self.seed is None else self.seed % (MAX_SEED + 1)

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """``POST /v1/completions`` (one prompt per request)."""

    kind: ClassVar[Kind] = "completion"

    prompt: str | list[str]
    #: Alternatives per token (0 to 5) whose log probabilities the answer carries, besides the chosen token's.
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = None
    best_of: int | None = Field(default=None, ge=1, le=20)
    suffix: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool | None) -> bool | None:
        if value:
            raise unsupported("rbee does not echo the prompt (echo must be false or left out)")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise unsupported("rbee generates one candidate per request (best_of=1)")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise unsupported("rbee does not complete text before a suffix (insertion)")
        return value

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported (a string)")
        text = value if isinstance(value, str) else value[0]
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"the prompt has {len(text)} characters; at most {MAX_TEXT_CHARS} are allowed")
        return value

    def to_generate(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        """The worker request for this completion."""
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return GenerateRequest(
            request_id=request_id,
            prompt=prompt,
            max_tokens=self.max_tokens or default_max_tokens,
            logprobs=self.logprobs,
            **self.sampling,
        )


class TextPart(Wire):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class CalledFunction(Wire):
    name: str = Field(max_length=MAX_ID_CHARS)
    arguments: str = Field(max_length=MAX_TEXT_CHARS)


class MessageToolCall(Wire):
    """A tool call of an earlier assistant message."""

    id: str = Field(max_length=MAX_ID_CHARS)
    type: Literal["function"] = "function"
    function: CalledFunction


class OpenAIMessage(Wire):
    """A chat message; content as a string or as text parts (other parts are refused)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]
        | None
    ) = None
    name: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    tool_calls: list[MessageToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)

    @property
    def text(self) -> str:
        """The content as one string."""
        content = self.content
        return "" if content is None else content if isinstance(content, str) else "".join(p.text for p in content)

    def to_chat_message(self) -> ChatMessage:
        """The worker's message model (``developer`` is a ``system`` message)."""
        role = "system" if self.role == "developer" else self.role
        calls = [call.model_dump() for call in self.tool_calls] if self.tool_calls else None
        return ChatMessage(role=role, content=self.text, name=self.name, tool_calls=calls,
                           tool_call_id=self.tool_call_id)  # fmt: skip


#: A function name as OpenAI takes it.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionSpec(Wire):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    #: The JSON schema of the arguments (none: any JSON object).
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Wire):
    type: Literal["function"]
    function: FunctionSpec


class ChosenFunction(Wire):
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: ChosenFunction


class JsonSchemaFormat(Wire):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Wire):
    """``text``, ``json_object`` (any JSON object) or ``json_schema`` (JSON matching ``json_schema.schema``)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema object (name, schema)")
        return self


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice

_AUTO = (
    "rbee calls tools only when tool_choice forces it: 'required' or {'type': 'function', 'function': {'name': "
    "...}}, or never ('none'); 'auto', the default with tools, is not supported (it would need each model's own "
    "tool-call syntax parsed out of its text)"
)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    kind: ClassVar[Kind] = "chat"

    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    #: Accepted; an answer calls one tool.
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _messages_fit(self) -> ChatCompletionRequest:
        check_total_chars([m.text for m in self.messages])
        return self

    @field_validator("top_logprobs")
    @classmethod
    def _logprobs_on(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @field_validator("tools")
    @classmethod
    def _distinct_tools(cls, value: list[ToolDefinition] | None) -> list[ToolDefinition] | None:
        names = [tool.function.name for tool in value or ()]
        if len(set(names)) != len(names):
            raise ValueError("two tools have the same name")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_fits(cls, choice: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        names = [tool.function.name for tool in info.data.get("tools") or ()]
        if choice is not None and choice != "none" and not names:
            raise ValueError(f"{_choice_name(choice)} needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"no tool is named {choice.function.name!r} (tools: {', '.join(names)})")
        if choice == "auto":
            raise unsupported(_AUTO)
        return choice

    @model_validator(mode="after")
    def _tool_choice_given(self) -> ChatCompletionRequest:
        if self.tools and self.tool_choice is None:
            raise PydanticCustomError(UNSUPPORTED, "tool_choice: " + _AUTO)
        return self

    def called_tools(self) -> list[ToolSpec]:
        """The tools one of which the answer must call (none: the answer is text)."""
        choice, tools = self.tool_choice, self.tools or []
        if choice == "required":
            return [ToolSpec(name=t.function.name, parameters=t.function.parameters) for t in tools]
        if isinstance(choice, NamedToolChoice):
            return [ToolSpec(name=t.function.name, parameters=t.function.parameters) for t in tools
                    if t.function.name == choice.function.name]  # fmt: skip
        return []

    def to_generate(self, request_id: str, default_max_tokens: int) -> GenerateRequest:
        """The worker request for this chat completion."""
        fmt = self.response_format
        schema = fmt.json_schema if fmt is not None and fmt.type == "json_schema" else None
        called = self.called_tools()
        return GenerateRequest(
            request_id=request_id,
            messages=[m.to_chat_message() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            json_object=fmt is not None and fmt.type == "json_object",
            json_schema=None if schema is None else schema.json_schema or {},
            tools=[t.model_dump(exclude_none=True) for t in self.tools] if self.tools and called else None,
            call_tools=called,
            **self.sampling,
        )


def _choice_name(choice: object) -> str:
    return repr(choice) if isinstance(choice, str) else "a named function"


class EmbeddingRequest(Wire):
    """``POST /v1/embeddings``: texts (token ids are refused: they would be another tokenizer's)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: ClassVar[Kind] = "embedding"
    #: Never streamed (what the queen's relay reads).
    stream: ClassVar[bool] = False

    model: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    #: Accepted, not used.
    user: str | None = Field(default=None, max_length=MAX_ID_CHARS)

    @field_validator("input")
    @classmethod
    def _texts(cls, value: str | list[str] | list[int] | list[list[int]]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("give at least one text")
        if not all(isinstance(t, str) for t in texts):
            raise unsupported("rbee embeds text, not token ids (they would be another tokenizer's); send strings "
                              "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")  # fmt: skip
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} texts per request")
        check_total_chars([str(t) for t in texts])
        return value  # type: ignore[return-value]  # checked: texts only

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise unsupported("rbee answers the model's own dimension (leave dimensions out)")
        return value

    @property
    def texts(self) -> list[str]:
        """The texts to embed."""
        return [self.input] if isinstance(self.input, str) else [str(t) for t in self.input]


def new_request_id(kind: Kind) -> str:
    """``cmpl-…``, ``chatcmpl-…`` or ``embd-…``: the completion id, also the id sent to the worker."""
    prefix = {"chat": "chatcmpl", "completion": "cmpl", "embedding": "embd"}[kind]
    return f"{prefix}-{uuid.uuid4().hex}"


OpenAIRequest = CompletionRequest | ChatCompletionRequest
#: What the queen relays to a worker.
RelayedRequest = CompletionRequest | ChatCompletionRequest | EmbeddingRequest
