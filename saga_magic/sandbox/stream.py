"""Chat answers: the completion object, the Azure SSE chunk sequence and its faults (PROTOCOLS 2.8).

Normal stream: prompt-filter chunk (empty ``choices``), role chunk, one delta per word, finish
chunk, post-finish annotation chunk, usage chunk (with ``stream_options.include_usage``),
``data: [DONE]``. For the truncating faults ``k`` counts content deltas after the two preamble
chunks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .common import json_bytes
from .faults import Outcome
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
_SEVERITY: Final = ("hate", "self_harm", "sexual", "violence")


@dataclass
class Answer:
    """A deterministic answer, before it is shaped as JSON or SSE."""

    id: str
    created: int
    model: str
    content: str | None
    finish_reason: str
    usage: dict[str, object]


def _safe() -> dict[str, object]:
    return {name: {"filtered": False, "severity": "safe"} for name in _SEVERITY}


def prompt_filter_results() -> list[dict[str, object]]:
    """Return ``prompt_filter_results`` for a harmless prompt."""
    results = _safe()
    results["jailbreak"] = {"filtered": False, "detected": False}
    return [{"prompt_index": 0, "content_filter_results": dict(sorted(results.items()))}]


def choice_filter_results(
    *, violence: bool = False, protected_text: bool = False
) -> dict[str, object]:
    """Return a choice's ``content_filter_results`` (optionally with a category triggered)."""
    results = _safe()
    if violence:
        results["violence"] = {"filtered": True, "severity": "medium"}
    results["protected_material_code"] = {"filtered": False, "detected": False}
    results["protected_material_text"] = {"filtered": protected_text, "detected": protected_text}
    return dict(sorted(results.items()))


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
        filters = {
            "error": {"code": "content_filter_error", "message": "The contents are not filtered"}
        }
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


def _annotation(end: int, *, blocked: bool) -> dict[str, object]:
    return {
        "choices": [
            {
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": end},
                "content_filter_results": choice_filter_results(protected_text=blocked),
                "finish_reason": "content_filter" if blocked else None,
                "index": 0,
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }


def sse_events(
    answer: Answer, outcome: Outcome, *, include_usage: bool
) -> tuple[list[bytes], Ending]:
    """Return the SSE events (one HTTP chunk each) and the ending for a streamed answer."""
    text = answer.content or ""
    base: dict[str, object] = {
        "created": answer.created,
        "id": answer.id,
        "model": answer.model,
        "object": "chat.completion.chunk",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if include_usage:
        base["usage"] = None

    def chunk(choice: dict[str, object]) -> bytes:
        return _event({"choices": [{**choice, "index": 0, "logprobs": None}], **base})

    first = _event(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": prompt_filter_results(),
        }
    )
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
                "content_filter_results": choice_filter_results(),
                "delta": {"content": piece},
                "finish_reason": None,
            }
        )
        for piece in pieces
    ]
    finish = chunk(
        {"content_filter_results": {}, "delta": {}, "finish_reason": answer.finish_reason}
    )
    tail = [finish, _event(_annotation(len(text), blocked=False))]
    if include_usage:
        tail.append(_event({**base, "choices": [], "usage": answer.usage}))
    tail.append(DONE)
    name = outcome.fault
    k = outcome.integer("k") if "k" in {p.name for p in outcome.spec.params} else 0
    head = [first, role]
    if name == "done_no_finish":
        return [*head, *deltas, DONE], Ending.COMPLETE
    if name == "stream_async_filter_block":
        sent = "".join(pieces[:k])
        return [
            *head,
            *deltas[:k],
            _event(_annotation(len(sent), blocked=True)),
            DONE,
        ], Ending.COMPLETE
    if name == "stream_error_event":
        error = {
            "error": {
                "message": "The server had an error while processing your request. "
                "Sorry about that!",
                "type": "server_error",
                "param": None,
                "code": "server_error",
            }
        }
        return [*head, *deltas[:k], _event(error), DONE], Ending.COMPLETE
    if name == "stream_bad_json":
        broken = b'data: {"choices":[{"delta":{"content":"' + b"\n\n"
        return [*head, *deltas[:k], broken, *deltas[k:], *tail], Ending.COMPLETE
    if name in ("stall_stream", "reset_mid_stream", "close_no_done"):
        ending = {
            "stall_stream": Ending.STALL,
            "reset_mid_stream": Ending.RESET,
            "close_no_done": Ending.CLOSE,
        }[name]
        return [*head, *deltas[:k]], ending
    events = [*head, *deltas, *tail]
    if name == "stream_comments":
        crlf = [e.replace(b"\n", b"\r\n") for e in events]
        events = [b": keep-alive\r\n\r\n"]
        for index, event in enumerate(crlf):
            events.append(event)
            if index % 2:
                events.append(b": keep-alive\r\n\r\n")
    return events, Ending.COMPLETE
