"""Chat answers: the completion object, the Azure SSE chunk sequence and its faults (PROTOCOLS 2.8).

Normal stream: prompt-filter chunk (empty ``choices``), role chunk, one delta per word, finish
chunk, post-finish annotation chunk, usage chunk (with ``stream_options.include_usage``, when
every earlier chunk carries ``"usage": null``), ``data: [DONE]``. For the truncating faults ``k``
counts content deltas after the two preamble chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .common import json_bytes
from .faults import Outcome
from .filters import FILTER_DOWN, choice_filter_results, prompt_filter_results
from .server import Ending

__all__ = [
    "STREAM_FAULTS",
    "Answer",
    "choice_filter_results",
    "completion_body",
    "prompt_filter_results",
    "split_pieces",
    "sse_events",
]

DONE: Final = b"data: [DONE]\n\n"
STREAM_FAULTS: Final = frozenset(
    {
        "stream_azure",
        "stream_comments",
        "done_no_finish",
        "stream_async_filter_block",
        "stream_error_event",
        "stream_bad_json",
        "stall_stream",
        "reset_mid_stream",
        "close_no_done",
    }
)
"""Variant faults answered as SSE even when the request did not ask to stream."""
SYSTEM_FINGERPRINT: Final = "fp_5a9d5a9d01"


@dataclass
class Answer:
    """A deterministic answer, before it is shaped as JSON or SSE."""

    id: str
    created: int
    model: str
    content: str | None
    finish_reason: str
    usage: dict[str, object]


def split_pieces(content: str) -> list[str]:
    """Split text into word deltas (leading whitespace kept) whose concatenation is the text."""
    pieces = re.findall(r"\s*\S+", content)
    consumed = sum(len(p) for p in pieces)
    if consumed < len(content):
        if pieces:
            pieces[-1] += content[consumed:]
        else:
            pieces = [content]
    return pieces


def completion_body(answer: Answer, variant: str) -> dict[str, object]:
    """Return the non-streaming ``chat.completion`` body, shaped by a variant fault."""
    content: str | None = answer.content
    finish = answer.finish_reason
    filters: dict[str, object] = choice_filter_results()
    if variant == "null_content":
        content = None
    elif variant == "filtered_output":
        content, finish = None, "content_filter"
        filters = choice_filter_results(violence=True)
    elif variant == "filter_down":
        filters = FILTER_DOWN
    body: dict[str, object] = {
        "choices": [
            {
                "content_filter_results": filters,
                "finish_reason": finish,
                "index": 0,
                "logprobs": None,
                "message": {"content": content, "refusal": None, "role": "assistant"},
            }
        ],
        "created": answer.created,
        "id": answer.id,
        "model": answer.model,
        "object": "chat.completion",
        "prompt_filter_results": prompt_filter_results(),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": answer.usage,
    }
    if variant == "missing_choices":
        del body["choices"]
    elif variant == "empty_choices":
        body["choices"] = []
    elif variant == "no_usage":
        del body["usage"]
    return body


def _event(obj: object) -> bytes:
    return b"data: " + json_bytes(obj) + b"\n\n"


def _annotation(
    end: int, *, blocked: bool, filters: dict[str, object] | None = None
) -> dict[str, object]:
    return {
        "choices": [
            {
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": end},
                "content_filter_results": filters
                if filters is not None
                else choice_filter_results(protected_text=blocked),
                "finish_reason": "content_filter" if blocked else None,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


_ERROR_EVENT: Final = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
}
_CUT_ENDINGS: Final = {
    "stall_stream": Ending.STALL,
    "reset_mid_stream": Ending.RESET,
    "close_no_done": Ending.CLOSE,
}


def _without_choices(chunk: dict[str, object], *, missing: bool) -> dict[str, object]:
    shaped = {k: v for k, v in chunk.items() if k != "choices"}
    if not missing:
        shaped["choices"] = []
    return shaped


def sse_events(
    answer: Answer, outcome: Outcome, *, include_usage: bool
) -> tuple[list[bytes], Ending]:
    """Return the SSE events (one HTTP chunk each) and the ending for a streamed answer.

    The body-shaping variants have a stream form too: ``filtered_output`` (no content deltas; the
    finish chunk says ``content_filter`` with the category filtered; no annotation),
    ``null_content`` (no content deltas, the usual finish), ``empty_choices`` and
    ``missing_choices`` (every chunk with ``choices: []`` or without ``choices``, then
    ``[DONE]``: no delta and no finish reason reach the client), ``no_usage`` (no usage chunk
    even when asked for) and ``filter_down`` (``content_filter_results.error`` on the deltas and
    the annotation).
    """
    name = outcome.fault
    text = "" if name in ("null_content", "filtered_output") else answer.content or ""
    usage: dict[str, object] = {"usage": None} if include_usage else {}
    base: dict[str, object] = {
        "created": answer.created,
        "id": answer.id,
        "model": answer.model,
        "object": "chat.completion.chunk",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        **usage,
    }

    def chunk(choice: dict[str, object]) -> dict[str, object]:
        return {"choices": [{**choice, "index": 0, "logprobs": None}], **base}

    filters = FILTER_DOWN if name == "filter_down" else None
    first: dict[str, object] = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": prompt_filter_results(),
        **usage,
    }
    role = chunk(
        {
            "content_filter_results": {},
            "delta": {"content": "", "refusal": None, "role": "assistant"},
            "finish_reason": None,
        }
    )
    pieces = split_pieces(text)
    deltas = [
        chunk(
            {
                "content_filter_results": filters or choice_filter_results(),
                "delta": {"content": piece},
                "finish_reason": None,
            }
        )
        for piece in pieces
    ]
    if name == "filtered_output":
        finish = chunk(
            {
                "content_filter_results": choice_filter_results(violence=True),
                "delta": {},
                "finish_reason": "content_filter",
            }
        )
        tail = [finish]
    else:
        finish = chunk(
            {"content_filter_results": {}, "delta": {}, "finish_reason": answer.finish_reason}
        )
        tail = [finish, {**_annotation(len(text), blocked=False, filters=filters), **usage}]
    if include_usage and name != "no_usage":
        tail.append({**base, "choices": [], "usage": answer.usage})
    head = [first, role]
    if name in ("empty_choices", "missing_choices"):
        missing = name == "missing_choices"
        shaped = [_without_choices(c, missing=missing) for c in [*head, *deltas, *tail]]
        return [*map(_event, shaped), DONE], Ending.COMPLETE
    k = outcome.integer("k") if "k" in {p.name for p in outcome.spec.params} else 0
    events = [_event(c) for c in head]
    if name == "done_no_finish":
        return [*events, *map(_event, deltas), DONE], Ending.COMPLETE
    if name == "stream_async_filter_block":
        sent = "".join(pieces[:k])
        block = _event({**_annotation(len(sent), blocked=True), **usage})
        return [*events, *map(_event, deltas[:k]), block, DONE], Ending.COMPLETE
    if name == "stream_error_event":
        return [*events, *map(_event, deltas[:k]), _event(_ERROR_EVENT), DONE], Ending.COMPLETE
    if name == "stream_bad_json":
        broken = b'data: {"choices":[{"delta":{"content":"' + b"\n\n"
        rest = [*deltas[k:], *tail]
        return [*events, *map(_event, deltas[:k]), broken, *map(_event, rest), DONE], (
            Ending.COMPLETE
        )
    if name in _CUT_ENDINGS:
        return [*events, *map(_event, deltas[:k])], _CUT_ENDINGS[name]
    events = [*events, *map(_event, [*deltas, *tail]), DONE]
    if name == "stream_comments":
        crlf = [e.replace(b"\n", b"\r\n") for e in events]
        events = [b": keep-alive\r\n\r\n"]
        for index, event in enumerate(crlf):
            events.append(event)
            if index % 2:
                events.append(b": keep-alive\r\n\r\n")
    return events, Ending.COMPLETE
