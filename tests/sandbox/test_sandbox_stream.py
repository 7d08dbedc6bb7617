"""Streaming (SSE) answers: the Azure chunk sequence and the stream faults (PROTOCOLS 2.8)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sbx_helpers import bearer, chat, sse_events, sse_json, user_message

from saga_magic.sandbox import Sandbox

TEXT = "alpha beta gamma delta"


def _stream(
    sandbox: Sandbox, client: httpx.Client, entry: str | None = None, **body: Any
) -> httpx.Response:
    if entry is not None:
        sandbox.script("chat", [entry])
    return chat(client, sandbox, user_message(TEXT, **body))


def _deltas(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in chunks
        if isinstance(c, dict) and c.get("choices") and "delta" in c["choices"][0]
    )


def test_azure_sequence(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _stream(sandbox, client, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "apim-request-id" in response.headers
    chunks = sse_json(response.text)
    first, role, *deltas, finish, annotation, done = chunks
    assert first["choices"] == []
    assert first["id"] == ""
    assert first["object"] == ""
    assert first["created"] == 0
    assert first["model"] == ""
    assert first["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    assert role["object"] == "chat.completion.chunk"
    assert role["id"].startswith("chatcmpl-")
    assert role["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
    assert [d["choices"][0]["delta"]["content"] for d in deltas] == [
        "alpha",
        " beta",
        " gamma",
        " delta",
    ]
    assert all(d["id"] == role["id"] and "usage" not in d for d in deltas)
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert annotation["id"] == ""
    assert annotation["model"] == ""
    assert annotation["choices"][0]["content_filter_offsets"] == {
        "check_offset": 0,
        "start_offset": 0,
        "end_offset": len(TEXT),
    }
    assert "delta" not in annotation["choices"][0]
    assert done == "[DONE]"
    assert response.text.endswith("data: [DONE]\n\n")


def test_include_usage(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _stream(
        sandbox, client, stream=True, stream_options={"include_usage": True}, max_tokens=2
    )
    chunks = sse_json(response.text)
    *body, usage_chunk, done = chunks
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 2
    assert usage_chunk["usage"]["prompt_tokens"] == 4
    assert all("usage" in c and c["usage"] is None for c in body)  # finding 2: every one
    assert _deltas(chunks) == "alpha beta"
    assert [c["choices"][0]["finish_reason"] for c in body[1:] if c["id"]][-1] == "length"


def _finish_reasons(chunks: list[Any]) -> list[Any]:
    return [
        c["choices"][0].get("finish_reason")
        for c in chunks
        if isinstance(c, dict) and c.get("choices") and c["choices"][0].get("finish_reason")
    ]


def test_filtered_output_streams_a_content_filter_finish(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    """Finding 1: the body-shaping faults have a stream form."""
    chunks = sse_json(_stream(sandbox, client, "filtered_output", stream=True).text)
    assert _deltas(chunks) == ""
    assert _finish_reasons(chunks) == ["content_filter"]
    *_, finish, done = chunks
    assert done == "[DONE]"
    assert finish["choices"][0]["content_filter_results"]["violence"] == {
        "filtered": True,
        "severity": "medium",
    }
    assert not any("content_filter_offsets" in c["choices"][0] for c in chunks[1:-1])


def test_null_content_streams_no_deltas(sandbox: Sandbox, client: httpx.Client) -> None:
    chunks = sse_json(_stream(sandbox, client, "null_content", stream=True).text)
    assert [c["choices"][0]["delta"] for c in chunks[1:-1] if "delta" in c["choices"][0]] == [
        {"content": "", "refusal": None, "role": "assistant"},
        {},
    ]
    assert _finish_reasons(chunks) == ["stop"]
    assert chunks[-1] == "[DONE]"


@pytest.mark.parametrize("entry", ["empty_choices", "missing_choices"])
def test_choiceless_streams(sandbox: Sandbox, client: httpx.Client, entry: str) -> None:
    response = _stream(sandbox, client, entry, stream=True, stream_options={"include_usage": True})
    *chunks, done = sse_json(response.text)
    assert done == "[DONE]"
    assert len(chunks) == 9  # the usual chunks, none of them with a choice
    if entry == "empty_choices":
        assert all(c["choices"] == [] for c in chunks)
    else:
        assert all("choices" not in c for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_no_usage_stream(sandbox: Sandbox, client: httpx.Client) -> None:
    options = {"include_usage": True}
    chunks = sse_json(
        _stream(sandbox, client, "no_usage", stream=True, stream_options=options).text
    )
    assert _deltas(chunks) == TEXT
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["content_filter_offsets"]["end_offset"] == len(TEXT)


def test_filter_down_stream(sandbox: Sandbox, client: httpx.Client) -> None:
    chunks = sse_json(_stream(sandbox, client, "filter_down", stream=True).text)
    down = {"error": {"code": "content_filter_error", "message": "The contents are not filtered"}}
    *_, annotation, done = chunks
    assert done == "[DONE]"
    assert annotation["choices"][0]["content_filter_results"] == down
    deltas = chunks[2:-3]
    assert len(deltas) == 4
    assert all(d["choices"][0]["content_filter_results"] == down for d in deltas)
    assert _deltas(chunks) == TEXT


def test_stream_azure_forces_streaming(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _stream(sandbox, client, "stream_azure")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert _deltas(sse_json(response.text)) == TEXT


def test_stream_comments(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _stream(sandbox, client, "stream_comments", stream=True)
    assert response.text.startswith(": keep-alive\r\n\r\n")
    assert "\r\n\r\ndata: " in response.text
    assert "\n\n" not in response.text.replace("\r\n", "")
    assert response.text.count(": keep-alive") >= 4
    chunks = sse_json(response.text)
    assert _deltas(chunks) == TEXT
    assert chunks[-1] == "[DONE]"


def test_done_no_finish(sandbox: Sandbox, client: httpx.Client) -> None:
    chunks = sse_json(_stream(sandbox, client, "done_no_finish", stream=True).text)
    assert chunks[-1] == "[DONE]"
    assert _deltas(chunks) == TEXT
    assert all(c["choices"][0].get("finish_reason") is None for c in chunks[1:-1])


def test_async_filter_block(sandbox: Sandbox, client: httpx.Client) -> None:
    chunks = sse_json(_stream(sandbox, client, "stream_async_filter_block", stream=True).text)
    *_, block, done = chunks
    assert done == "[DONE]"
    assert _deltas(chunks) == "alpha beta"
    choice = block["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["content_filter_results"]["protected_material_text"] == {
        "filtered": True,
        "detected": True,
    }
    assert choice["content_filter_offsets"]["end_offset"] == len("alpha beta")
    assert sum(1 for c in chunks[1:-1] if c["choices"][0].get("finish_reason")) == 1


def test_error_event(sandbox: Sandbox, client: httpx.Client) -> None:
    chunks = sse_json(_stream(sandbox, client, "stream_error_event:1", stream=True).text)
    *_, error, done = chunks
    assert done == "[DONE]"
    assert _deltas(chunks) == "alpha"
    assert error == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }


def test_bad_json_line(sandbox: Sandbox, client: httpx.Client) -> None:
    events = sse_events(_stream(sandbox, client, "stream_bad_json:2", stream=True).text)
    assert events[4] == '{"choices":[{"delta":{"content":"'
    with pytest.raises(ValueError, match=r"Unterminated string|Expecting"):
        sse_json(_stream(sandbox, client, "stream_bad_json", stream=True).text)
    assert events[-1] == "[DONE]"


def test_close_no_done_ends_cleanly(sandbox: Sandbox, client: httpx.Client) -> None:
    response = _stream(sandbox, client, "close_no_done:2", stream=True)
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    chunks = sse_json(response.text)
    assert len(chunks) == 4
    assert "[DONE]" not in chunks
    assert _deltas(chunks) == "alpha beta"
    assert all(c["choices"] == [] or c["choices"][0]["finish_reason"] is None for c in chunks)


def test_stall_stream_keeps_the_connection_open(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["stall_stream:1"])
    lines: list[str] = []
    started = time.monotonic()
    with (
        pytest.raises(httpx.ReadTimeout),
        client.stream(
            "POST",
            sandbox.chat_endpoint,
            json=user_message(TEXT, stream=True),
            headers=bearer(sandbox),
            timeout=httpx.Timeout(5.0, read=0.2),
        ) as response,
    ):
        lines.extend(response.iter_lines())
    assert time.monotonic() - started >= 0.2
    assert _deltas(sse_json("\n".join(lines) + "\n\n")) == "alpha"


def test_reset_mid_stream(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.script("chat", ["reset_mid_stream:2"])
    lines: list[str] = []
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        client.stream(
            "POST",
            sandbox.chat_endpoint,
            json=user_message(TEXT, stream=True),
            headers=bearer(sandbox),
        ) as response,
    ):
        lines.extend(response.iter_lines())
    assert chat(client, sandbox).status_code == 200


def test_chunk_pacing(client: httpx.Client) -> None:
    with Sandbox(stream_chunk_delay=0.02) as sb:
        started = time.monotonic()
        response = chat(client, sb, user_message(TEXT, stream=True))
        assert len(sse_events(response.text)) == 9
        assert time.monotonic() - started >= 8 * 0.02


async def test_async_client_streams(sandbox: Sandbox, aclient: httpx.AsyncClient) -> None:
    events: list[str] = []
    async with aclient.stream(
        "POST", sandbox.chat_endpoint, json=user_message(TEXT, stream=True), headers=bearer(sandbox)
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    assert len(events) == 9
