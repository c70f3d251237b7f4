"""The OpenAI API as clients call it: the ``openai`` client and LangChain against ``rbee up`` on the tiny model.

The cluster places the tiny GGUF twice: as ``tiny`` (completions) and as ``tiny-embed`` (``embedding: true`` in
the spec). Structured output and forced tool calls are grammar-constrained, so even the random tiny model
answers with JSON that parses and matches the schema — as long as its strings are bounded (``maxLength``):
the tiny model rarely closes a string on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.e2e.conftest import API_KEY, KEYS_ENV
from tests.support.processes import ProcessPool
from tests.support.services import LocalCluster, local_spec, start_rbee_up

pytestmark = [pytest.mark.engine, pytest.mark.slow]

MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
ADD_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]},
    },
}  # fmt: skip


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int


class GetWeather(BaseModel):
    """The weather of a city."""

    city: str = Field(max_length=16)
    days: int


@pytest.fixture(scope="module")
def cluster(module_processes: ProcessPool, tiny_model_path: Path) -> LocalCluster:
    """``rbee up`` with ``tiny`` and the embedding model ``tiny-embed`` (the same file), API key ``API_KEY``."""
    spec = local_spec(module_processes.workdir, tiny_model_path, "tiny", api_keys_env=KEYS_ENV, context=1024)
    text = spec.read_text()
    text = text.replace("placements:\n", f"""\
  - id: tiny-embed
    source: file://{tiny_model_path}
    context: 512
    embedding: true
placements:
  - model: tiny-embed
""")
    spec.write_text(text)
    running = start_rbee_up(module_processes, spec, env={KEYS_ENV: API_KEY})
    running.api_key = API_KEY
    return running


def client(cluster: LocalCluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cluster.queen_url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def post(cluster: LocalCluster, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{cluster.queen_url}/v1{path}", json=body, timeout=120, trust_env=False,
                      headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip


def weather_args(arguments: str) -> dict[str, Any]:
    """The arguments of a get_weather call, checked against its schema."""
    args = json.loads(arguments)
    assert set(args) == {"city", "days"}, args
    assert isinstance(args["city"], str) and len(args["city"]) <= 16 and isinstance(args["days"], int)
    return dict(args)


# --------------------------------------------------------------------------- structured output


def test_parse_with_a_pydantic_model_returns_the_parsed_object(cluster: LocalCluster) -> None:
    answer = client(cluster).chat.completions.parse(model="tiny", messages=MESSAGES, response_format=Person,
                                                    max_tokens=200, seed=1)  # fmt: skip
    parsed = answer.choices[0].message.parsed
    assert isinstance(parsed, Person), answer
    assert answer.choices[0].finish_reason == "stop"


def test_streamed_parse_and_parsed_tool_arguments(cluster: LocalCluster) -> None:
    c = client(cluster)
    with c.chat.completions.stream(model="tiny", messages=MESSAGES, response_format=Person, max_tokens=200) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person)
    tool = openai.pydantic_function_tool(GetWeather)
    answer = c.chat.completions.parse(model="tiny", messages=MESSAGES, tools=[tool], max_tokens=150,
                                      tool_choice={"type": "function", "function": {"name": "GetWeather"}})  # fmt: skip
    (call,) = answer.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)


def test_json_object_and_streamed_json_schema(cluster: LocalCluster) -> None:
    c = client(cluster)
    # Any JSON object: the tiny model would open a string it never closes, so '"' (token 261, byte token 37) is
    # banned with logit_bias: the one object left is the empty one.
    answer = c.chat.completions.create(model="tiny", messages=MESSAGES, response_format={"type": "json_object"},
                                       max_tokens=200, logit_bias={"261": -100, "37": -100})  # fmt: skip
    assert json.loads(answer.choices[0].message.content or "") == {}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    stream = c.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=100, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "flag", "schema": schema}},
    )  # fmt: skip
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert isinstance(json.loads(text)["ok"], bool)


def test_a_schema_without_a_grammar_is_400_naming_response_format(cluster: LocalCluster) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}
    response = post(cluster, "/chat/completions", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "response_format"


# --------------------------------------------------------------------------- tools


def test_a_forced_tool_call_returns_tool_calls_matching_the_schema(cluster: LocalCluster) -> None:
    answer = client(cluster).chat.completions.create(
        model="tiny", messages=MESSAGES, tools=[WEATHER_TOOL, ADD_TOOL], max_tokens=150,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    weather_args(call.function.arguments)


def test_a_forced_tool_call_streams_as_deltas(cluster: LocalCluster) -> None:
    stream = client(cluster).chat.completions.create(
        model="tiny", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="required", max_tokens=150, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    deltas = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or ()]
    assert len(deltas) > 2  # the arguments arrive in pieces
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    weather_args("".join(d.function.arguments or "" for d in deltas if d.function))
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_required_with_several_tools_calls_one_of_them(cluster: LocalCluster) -> None:
    answer = client(cluster).chat.completions.create(model="tiny", messages=MESSAGES, tools=[WEATHER_TOOL, ADD_TOOL],
                                                     tool_choice="required", max_tokens=150)  # fmt: skip
    (call,) = answer.choices[0].message.tool_calls or []
    args = json.loads(call.function.arguments)
    if call.function.name == "add":
        assert set(args) == {"a", "b"} and all(isinstance(v, int) for v in args.values())
    else:
        assert call.function.name == "get_weather"
        weather_args(call.function.arguments)


def test_a_tool_result_conversation_continues(cluster: LocalCluster) -> None:
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    answer = client(cluster).chat.completions.create(model="tiny", messages=messages, max_tokens=5)
    assert answer.choices[0].message.content


# --------------------------------------------------------------------------- sampling parameters


def test_logprobs_of_chat_and_completions(cluster: LocalCluster) -> None:
    c = client(cluster)
    chat = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs and chat.choices[0].logprobs.content
    assert content and len(content) == 4
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert bytes(token.bytes or []).decode() == token.token
        assert token.top_logprobs[0].logprob >= token.logprob
    completion = c.completions.create(model="tiny", prompt="The bee", max_tokens=3, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs and logprobs.tokens and len(logprobs.tokens) == 3
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset == [0, len(logprobs.tokens[0]), len(logprobs.tokens[0]) + len(logprobs.tokens[1])]
    assert all(len(top) == 2 for top in logprobs.top_logprobs or [])


def test_streamed_logprobs(cluster: LocalCluster) -> None:
    stream = client(cluster).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, logprobs=True,
                                                     stream=True)  # fmt: skip
    tokens = [t for ch in stream if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content or ()]
    assert len(tokens) == 4 and all(t.top_logprobs == [] for t in tokens)


def test_seed_penalties_logit_bias_and_stop(cluster: LocalCluster) -> None:
    c = client(cluster)
    kwargs: dict[str, Any] = {"model": "tiny", "prompt": "The bee", "max_tokens": 8, "seed": 7,
                              "frequency_penalty": 1.0, "presence_penalty": 0.5}  # fmt: skip
    first, second = (c.completions.create(**kwargs).choices[0].text for _ in range(2))
    assert first == second  # same seed, same answer
    # Token 308 is "Q" in the tiny vocabulary (3 control + 256 byte tokens, "▁", then "!".."~"): a token the
    # model never samples on its own; +100 makes it the only one.
    biased = c.completions.create(model="tiny", prompt="The bee", max_tokens=3, logit_bias={"308": 100})
    assert biased.choices[0].text == "QQQ"
    stopped = c.completions.create(model="tiny", prompt="The bee", max_tokens=30, stop=[" "])
    assert stopped.choices[0].text == "" and stopped.choices[0].finish_reason == "stop"


def test_logit_bias_outside_the_vocabulary_is_400(cluster: LocalCluster) -> None:
    response = post(cluster, "/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2,
                                              "logit_bias": {"99999999": 5}})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "logit_bias"


# --------------------------------------------------------------------------- refused parameters


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/chat/completions", {"frobnicate": True}, "frobnicate"),
        ("/chat/completions", {"n": 2}, "n"),
        ("/chat/completions", {"store": True}, "store"),
        ("/chat/completions", {"metadata": {"a": "b"}}, "metadata"),
        ("/chat/completions", {"tools": [WEATHER_TOOL]}, "tool_choice"),
        ("/chat/completions", {"tools": [WEATHER_TOOL], "tool_choice": "auto"}, "tool_choice"),
        ("/chat/completions", {"functions": [WEATHER_TOOL["function"]]}, "functions"),
        ("/chat/completions", {"reasoning_effort": "low"}, "reasoning_effort"),
        ("/completions", {"echo": True}, "echo"),
        ("/completions", {"best_of": 2}, "best_of"),
        ("/completions", {"suffix": "end"}, "suffix"),
        ("/embeddings", {"dimensions": 8}, "dimensions"),
        ("/embeddings", {"input": [[1, 2, 3]]}, "input"),
    ],
)
def test_what_rbee_cannot_honour_is_400_naming_the_param(cluster: LocalCluster, path: str, extra: dict[str, Any],
                                                          param: str) -> None:  # fmt: skip
    base: dict[str, Any] = {"/chat/completions": {"model": "tiny", "messages": MESSAGES, "max_tokens": 2},
                            "/completions": {"model": "tiny", "prompt": "x", "max_tokens": 2},
                            "/embeddings": {"model": "tiny-embed", "input": "x"}}[path]  # fmt: skip
    response = post(cluster, path, {**base, **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("UNSUPPORTED_PARAMETER", param, "invalid_request_error")
    assert param in error["message"]


def test_the_openai_client_raises_bad_request_naming_the_unknown_param(cluster: LocalCluster) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(cluster).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                                extra_body={"top_k": 5})  # fmt: skip
    assert caught.value.param == "top_k" and caught.value.code == "UNSUPPORTED_PARAMETER"


def test_default_fields_of_clients_are_accepted(cluster: LocalCluster) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_completion_tokens": 2, "stream": False, "n": 1,
            "user": "someone", "store": False, "parallel_tool_calls": True, "temperature": 0.7, "top_p": 0.9,
            "stream_options": None, "response_format": {"type": "text"}, "tool_choice": "none"}  # fmt: skip
    response = post(cluster, "/chat/completions", body)
    assert response.status_code == 200, response.text


# --------------------------------------------------------------------------- embeddings and models


def test_embeddings_return_unit_vectors_of_the_models_dimension(cluster: LocalCluster) -> None:
    c = client(cluster)
    answer = c.embeddings.create(model="tiny-embed", input=["the bee", "the hive", "the bee"])  # base64 on the wire
    vectors = [d.embedding for d in answer.data]
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert all(len(v) == 64 for v in vectors)  # the tiny model's n_embd
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-3 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5) and vectors[0] != pytest.approx(vectors[1], abs=1e-5)
    assert answer.usage.prompt_tokens > 0 and answer.model == "tiny-embed"
    floats = c.embeddings.create(model="tiny-embed", input="the bee", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)


def test_embeddings_and_completions_refuse_the_other_kind_of_model(cluster: LocalCluster) -> None:
    c = client(cluster)
    with pytest.raises(openai.BadRequestError) as caught:
        c.embeddings.create(model="tiny", input="x")
    assert (caught.value.code, caught.value.param) == ("WRONG_MODEL_TYPE", "model")
    with pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(model="tiny-embed", messages=MESSAGES, max_tokens=2)
    assert (caught.value.code, caught.value.param) == ("WRONG_MODEL_TYPE", "model")


def test_an_embedding_input_longer_than_the_context_is_400_naming_input(cluster: LocalCluster) -> None:
    response = post(cluster, "/embeddings", {"model": "tiny-embed", "input": ["short", "bee " * 1500]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("CONTEXT_LENGTH_EXCEEDED", "input")
    assert client(cluster).embeddings.create(model="tiny-embed", input="still serving").data


def test_models_retrieve(cluster: LocalCluster) -> None:
    c = client(cluster)
    model = c.models.retrieve("tiny")
    assert (model.id, model.object, model.owned_by) == ("tiny", "model", "rbee")
    with pytest.raises(openai.NotFoundError) as caught:
        c.models.retrieve("no-such-model")
    assert caught.value.code == "MODEL_NOT_FOUND" and caught.value.param == "model"
    assert "tiny" in caught.value.message


# --------------------------------------------------------------------------- LangChain


def chat_model(cluster: LocalCluster, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="tiny", base_url=f"{cluster.queen_url}/v1", api_key=API_KEY, max_retries=0,
                      timeout=120, **kwargs)  # fmt: skip


def test_langchain_bind_tools(cluster: LocalCluster) -> None:
    get_weather = GetWeather
    model = chat_model(cluster, max_tokens=150).bind_tools([get_weather], tool_choice="GetWeather")
    message = model.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "GetWeather" and set(call["args"]) == {"city", "days"}
    streamed = None
    for chunk in chat_model(cluster, max_tokens=150).bind_tools([get_weather], tool_choice="any").stream("Weather?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    (call,) = streamed.tool_calls
    assert call["name"] == "GetWeather" and isinstance(GetWeather(**call["args"]).days, int)


def test_langchain_with_structured_output(cluster: LocalCluster) -> None:
    person = chat_model(cluster, max_tokens=200).with_structured_output(Person).invoke("Who are you?")
    assert isinstance(person, Person)
    by_tool = chat_model(cluster, max_tokens=200).with_structured_output(Person, method="function_calling")
    assert isinstance(by_tool.invoke("Who are you?"), Person)


def test_langchain_openai_embeddings_offline(cluster: LocalCluster) -> None:
    from langchain_openai import OpenAIEmbeddings

    # check_embedding_ctx_length=False: LangChain sends the texts themselves, not token ids counted with tiktoken
    # (which downloads its encodings, and whose ids are another tokenizer's anyway).
    embeddings = OpenAIEmbeddings(model="tiny-embed", base_url=f"{cluster.queen_url}/v1", api_key=API_KEY,
                                  check_embedding_ctx_length=False, max_retries=0)  # fmt: skip
    documents = embeddings.embed_documents(["the bee", "the hive"])
    query = embeddings.embed_query("the bee")
    assert [len(v) for v in documents] == [64, 64]
    assert query == pytest.approx(documents[0], abs=1e-5)
