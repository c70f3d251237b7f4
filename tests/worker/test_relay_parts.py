"""The pieces of the relay in-process: chunk bytes, the end-event scanner, the batched handoff of tokens."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from rbee_runtime.common.contracts import EndEvent
from rbee_runtime.common.openai_chunks import SSE_DONE, ChatFormatter, CompletionFormatter, Formatter, sse
from rbee_runtime.common.relay import EndScanner, MalformedEndError, RelayEnd, end_event
from rbee_runtime.worker.service import Handoff, Item

TEXTS = [" plain", "", 'quote " and \\ backslash', "new\nline\ttab", "héllo wörld", "🐝 emoji", "\x00\x1f",
         "event: rbee-end\n"]  # fmt: skip


@pytest.mark.parametrize("fmt", [CompletionFormatter("cmpl-1", "m", 5), ChatFormatter("chat\"cmpl", "m/ö", 7)])
@pytest.mark.parametrize("text", TEXTS)
def test_token_chunk_bytes_are_those_of_the_payload(fmt: Formatter, text: str) -> None:
    assert fmt.token_sse(text) == sse(fmt.token_chunk(text))


def stream_bytes(texts: list[str]) -> tuple[bytes, bytes]:
    """A relayed completion stream of ``texts``: (what the client must get before [DONE], the whole stream)."""
    fmt = CompletionFormatter("cmpl-1", "m", 5)
    end = EndEvent(tokens_out=len(texts), prompt_tokens=3, stop_reason="length", decode_ms=1.0)
    client = b"".join(fmt.token_sse(t) for t in texts) + sse(fmt.final_chunk(end))
    trailer = end_event(RelayEnd(tokens_out=len(texts), prompt_tokens=3, stop_reason="length"))
    return client, client + trailer + SSE_DONE


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
def test_scanner_forwards_whole_events_and_keeps_the_end_event(size: int) -> None:
    client, whole = stream_bytes(TEXTS)
    scanner = EndScanner()
    out = b""
    for at in range(0, len(whole), size):
        piece = scanner.feed(whole[at : at + size])
        assert piece == b"" or piece.endswith(b"\n\n")  # never half an event
        out += piece
    assert out == client
    assert scanner.end == RelayEnd(tokens_out=len(TEXTS), prompt_tokens=3, stop_reason="length")
    assert scanner.events == len(TEXTS) + 1


def test_scanner_without_end_event_and_with_a_broken_one() -> None:
    client, _ = stream_bytes(["a", "b"])
    scanner = EndScanner()
    assert scanner.feed(client + b"data: {half") == client and scanner.end is None
    with pytest.raises(MalformedEndError):
        EndScanner().feed(b"event: rbee-end\ndata: {nope}\n\n")


def test_handoff_wakes_the_loop_once_per_batch_not_once_per_token() -> None:
    async def scenario() -> tuple[list[list[Item]], int]:
        handoff = Handoff(asyncio.get_running_loop())
        produced = threading.Event()

        def produce() -> None:
            for i in range(100):
                handoff.put(str(i))
            produced.set()

        batches = [await asyncio.wait_for(_take_after(handoff, produce), 5)]
        assert produced.wait(5)
        while sum(len(b) for b in batches) < 100:
            batches.append(await asyncio.wait_for(handoff.take(), 5))
        return batches, handoff.wakeups

    batches, wakeups = asyncio.run(scenario())
    assert [item for batch in batches for item in batch] == [str(i) for i in range(100)]
    assert wakeups <= len(batches) < 100


async def _take_after(handoff: Handoff, produce: Callable[[], None]) -> list[Item]:
    """Wait in ``take`` while a thread produces (the first put wakes it; the rest join later batches)."""
    thread = threading.Thread(target=produce)
    loop = asyncio.get_running_loop()
    loop.call_soon(thread.start)
    items = await handoff.take()
    await loop.run_in_executor(None, thread.join)
    return list(items)
