"""``%%copilot`` in an IPython shell, with fake engines: options, rendering, memory, failures."""

from __future__ import annotations

import json
from typing import Any

import pytest
from magic_helpers import FakeEngine, Harness, plain, texts

from saga_magic.core.errors import (
    AuthenticationError,
    ConfigurationError,
    InputValidationError,
    PermissionDeniedError,
    RateLimitError,
    TransientError,
)
from saga_magic.core.types import AIResult
from saga_magic.magic import cell as cell_module
from saga_magic.magic.failure import CopilotError, CopilotInterrupted
from saga_magic.magic.options import CellOptions


def test_streams_markdown_and_stores_the_result(harness: Harness) -> None:
    harness.shell.user_ns["name"] = "Ada"
    result, captured = harness.run("%%copilot\nhello {name}, keep {x + 1} as typed")
    assert result.success, captured.stdout
    engine = harness.engine()
    assert engine.modes == ["stream"]
    assert engine.tasks[0].prompt == "hello Ada, keep {x + 1} as typed"
    answer = harness.shell.user_ns["_copilot"]
    assert isinstance(answer, AIResult)
    assert answer.response_text == "echo: hello Ada, keep {x + 1} as typed"
    outputs = captured._outputs
    assert outputs[0]["update"] is False
    assert all(item["update"] for item in outputs[1:])
    assert len({item["transient"]["display_id"] for item in outputs}) == 1
    final = outputs[-1]["data"]
    assert final == {"text/markdown": answer.response_text, "text/plain": answer.response_text}
    assert any("\N{LEFT HALF BLOCK}" in item["data"]["text/plain"] for item in outputs[:-1])
    assert result.result is None  # no Out[] entry: the answer is displayed, not returned
    assert captured.stdout == ""


def test_no_stream_and_every_option(harness: Harness) -> None:
    result, captured = harness.run(
        "%%copilot --no-stream --user bob --model m1 --system 'be brief' --max-tokens 9 "
        "--temperature 0.3 --format text -o answer\nquestion"
    )
    assert result.success, captured.stdout
    engine = harness.engine("bob", "m1")
    assert engine.modes == ["reason"]
    task = engine.tasks[0]
    assert (task.system_prompt, task.max_tokens, task.temperature) == ("be brief", 9, 0.3)
    assert harness.shell.user_ns["answer"] is harness.shell.user_ns["_copilot"]
    assert [item["data"] for item in captured._outputs] == [{"text/plain": "echo: question"}]


def test_code_format_renders_a_fence(harness: Harness) -> None:
    harness.configure = lambda e: setattr(e, "answer", lambda t: "Here:\n```py\nprint(1)\n```\nbye")
    result, captured = harness.run("%%copilot --format code\nwrite code")
    assert result.success
    assert captured._outputs[-1]["data"] == {
        "text/markdown": "```py\nprint(1)\n```",
        "text/plain": "print(1)",
    }
    assert all(set(item["data"]) == {"text/plain"} for item in captured._outputs[:-1])


def test_json_format_parses_or_fails_in_one_line(harness: Harness) -> None:
    harness.configure = lambda e: setattr(e, "answer", lambda t: t.prompt)
    result, captured = harness.run('%%copilot --format json\n{"a": [1, 2]}')
    assert result.success
    assert captured._outputs[-1]["data"]["application/json"] == {"a": [1, 2]}
    result, captured = harness.run("%%copilot --format json\nnot json")
    assert isinstance(result.error_in_exec, CopilotError)
    out = plain(captured.stdout)
    assert "CopilotError: the answer is not valid JSON" in out
    assert "Traceback" not in out
    assert harness.shell.user_ns["_copilot"].response_text == "not json"
    assert texts(captured)[-1] == "not json"


def test_conversation_continues_and_resets(harness: Harness) -> None:
    harness.run("%%copilot\nfirst")
    harness.run("%%copilot\nsecond")
    engine = harness.engine()
    history = engine.tasks[1].history
    assert [(m.role, m.content) for m in history] == [
        ("user", "first"),
        ("assistant", "echo: first"),
    ]
    harness.run("%%copilot --new\nthird")
    assert engine.tasks[2].history == ()
    harness.run("%copilot reset")
    harness.run("%%copilot\nfourth")
    assert engine.tasks[3].history == ()
    harness.run("%%copilot --user bob\nother user")
    assert harness.engine("bob").tasks[0].history == ()
    assert harness.session.memory.turns("default") == 1
    harness.session.memory.max_turns = 0
    harness.run("%%copilot\nfifth")
    assert engine.tasks[-1].history == ()


def test_retry_progress_line_is_shown_then_cleared(harness: Harness) -> None:
    harness.configure = lambda e: setattr(
        e,
        "retries",
        [
            {"attempt": 1},
            {"event": "token_refresh_retry", "reason": "503", "task_id": None, "attempt": 2},
            {"user_id": "someone-else"},
            {"task_id": "another-task"},
        ],
    )
    result, captured = harness.run("%%copilot\nhi")
    assert result.success
    lines = [line for line in texts(captured) if "retrying" in line]
    assert lines[0] in (
        "rate limited (429), retrying in 4 s, attempt 2 of 6",
        "rate limited (429), retrying in 3 s, attempt 2 of 6",
    )
    assert any(line.startswith("token refresh server error (503), retrying in") for line in lines)
    assert all("attempt 3 of 6" in line for line in lines if line.startswith("token"))
    progress_id = next(
        item["transient"]["display_id"]
        for item in captured._outputs
        if "retrying" in item["data"].get("text/plain", "")
    )
    last_progress = [o for o in captured._outputs if o["transient"]["display_id"] == progress_id][
        -1
    ]
    assert last_progress["data"] == {"text/plain": ""}
    assert harness.shell.user_ns["_copilot"].attempts == 5


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            AuthenticationError("refresh token expired", code="invalid_grant"),
            "re-login needed for user 'default' (refresh token expired): run %copilot login",
        ),
        (
            PermissionDeniedError("Principal does not have access", status=403),
            "permission denied for user 'default': Principal does not have access -> ask an admin",
        ),
        (
            ConfigurationError("ARC_SAGA_COPILOT_ENDPOINT is not set", hint="set it"),
            "configuration: ARC_SAGA_COPILOT_ENDPOINT is not set -> set it",
        ),
        (
            RateLimitError("throttled", retry_after=60.0, attempts=6),
            "rate limited after 6 attempts; retry after 1 min (at ",
        ),
        (
            TransientError("server error 503", attempts=6),
            "request failed after 6 attempts: server error 503",
        ),
        (
            InputValidationError("too long", code="context_length_exceeded"),
            "request rejected: too long -> shorten the prompt, or start over with --new",
        ),
    ],
)
def test_core_errors_fail_the_cell_with_one_line(
    harness: Harness, error: Exception, expected: str
) -> None:
    harness.configure = lambda e: setattr(e, "error", error)
    result, captured = harness.run("%%copilot\nhi")
    assert not result.success
    assert isinstance(result.error_in_exec, CopilotError)
    assert result.error_in_exec.__cause__ is error
    out = plain(captured.stdout).strip()
    assert out.startswith("CopilotError: " + expected), out
    assert "\n" not in out
    assert "Traceback" not in out
    assert "_copilot" not in harness.shell.user_ns
    assert harness.session.memory.turns("default") == 0
    assert harness.session.last is not None
    assert harness.session.last.error


def test_err_history_interpolates_earlier_failures(harness: Harness) -> None:
    first, _ = harness.run("1/0")
    second, _ = harness.run("%%copilot --format json\nnot json")
    a, b = first.execution_count, second.execution_count
    result, _ = harness.run(
        f"%%copilot --no-stream\nwhy {{Err[{a}]}} and {{Err[{b}]}}? {{In[{a}]}}"
    )
    assert result.success
    prompt = harness.engine().tasks[-1].prompt
    assert prompt.startswith("why ZeroDivisionError: division by zero and CopilotError: the answer")
    assert prompt.endswith("? 1/0")


def test_missing_history_reference_is_noted(harness: Harness) -> None:
    result, captured = harness.run("%%copilot\nabout {Out[7]}")
    assert result.success
    assert "note: left as typed (nothing recorded): Out[7]" in captured.stderr
    assert harness.engine().tasks[0].prompt == "about {Out[7]}"


def test_usage_errors_are_one_line(harness: Harness) -> None:
    result, captured = harness.run("%%copilot --max-tokens lots\nhi")
    assert not result.success
    assert (
        plain(captured.stdout + captured.stderr)
        .strip()
        .startswith("UsageError: argument --max-tokens")
    )
    result, captured = harness.run("%%copilot\n   \n")
    assert "the cell is empty" in captured.stdout + captured.stderr
    assert harness.engines == {}


def test_unexpected_errors_keep_their_traceback(harness: Harness) -> None:
    harness.configure = lambda e: setattr(e, "error", RuntimeError("a bug"))
    result, captured = harness.run("%%copilot\nhi")
    assert isinstance(result.error_in_exec, RuntimeError)
    assert "Traceback" in plain(captured.stdout)


def test_interrupt_cancels_the_request_and_the_kernel_stays_usable(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real Ctrl-C is simulated in test_interrupt_subprocess.py (interrupt_main disables
    # coverage's tracer in this process); here the wait raises KeyboardInterrupt itself.
    real_wait = cell_module._wait

    def interrupted_wait(job: Any, *args: Any) -> None:
        while not harness.engines or not harness.engine().tasks:
            job.wait(0.01)  # let the request start and block
        raise KeyboardInterrupt

    harness.configure = lambda e: setattr(e, "block", True)
    monkeypatch.setattr(cell_module, "_wait", interrupted_wait)
    result, captured = harness.run("%%copilot\nwait for ever")
    assert isinstance(result.error_in_exec, CopilotInterrupted)
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert plain(captured.stdout).strip() == (
        "KeyboardInterrupt: interrupted: the request was cancelled; the kernel is ready"
    )
    assert harness.engine().cancelled  # the coroutine saw CancelledError and cleaned up
    assert harness.session.last is not None
    assert harness.session.last.error == "interrupted"
    monkeypatch.setattr(cell_module, "_wait", real_wait)
    harness.engine().block = False
    result, _ = harness.run("%%copilot\nagain")
    assert result.success
    assert harness.shell.user_ns["_copilot"].response_text == "echo: again"


def test_a_job_cancelled_elsewhere_reads_as_an_interrupt(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cancelling_wait(job: Any, *args: Any) -> None:
        while not harness.engines or not harness.engine().tasks:
            job.wait(0.01)
        job.cancel()

    harness.configure = lambda e: setattr(e, "block", True)
    monkeypatch.setattr(cell_module, "_wait", cancelling_wait)
    result, _ = harness.run("%%copilot\nwait")
    assert isinstance(result.error_in_exec, CopilotInterrupted)


def test_settings_errors_are_one_line(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARC_SAGA_COPILOT_ENDPOINT", "http://example.com/chat/completions")
    result, captured = harness.run("%%copilot\nhi")
    assert isinstance(result.error_in_exec, CopilotError)
    out = plain(captured.stdout)
    assert out.startswith(
        "CopilotError: configuration: ARC_SAGA_COPILOT_ENDPOINT uses plain http://"
    )
    result, captured = harness.run("%copilot config")
    assert "ARC_SAGA_COPILOT_ENDPOINT" in plain(captured.stdout)


def test_engine_tasks_record_json_safe_prompts(harness: Harness) -> None:
    harness.shell.user_ns["data"] = {"k": [1, 2]}
    harness.run("%%copilot\n{data}")
    assert json.loads(harness.engine().tasks[0].prompt.replace("'", '"')) == {"k": [1, 2]}


def test_fake_engine_double_is_closed_on_unload(harness: Harness) -> None:
    harness.run("%%copilot\nhi")
    engine: FakeEngine = harness.engine()
    harness.session.reset_core()
    assert engine.closed


def test_option_lines_are_not_expanded_by_ipython(harness: Harness) -> None:
    harness.shell.user_ns["persona"] = "pirate"
    result, captured = harness.run("%%copilot -o {'ans'+'wer2'}\nhi")
    assert not result.success  # the braces reach the option parser as typed
    assert "-o/--output needs a Python variable name" in captured.stdout + captured.stderr
    assert "answer2" not in harness.shell.user_ns
    result, _ = harness.run('%%copilot --system "speak like a $persona, cost in {1+1} $"\nhi')
    assert result.success
    assert harness.engine().tasks[0].system_prompt == "speak like a $persona, cost in {1+1} $"
    result, captured = harness.run("%copilot reset --user $persona")
    assert "conversation reset for '$persona'" in captured.stdout


def test_inserted_variables_are_noted_on_stderr(harness: Harness) -> None:
    harness.shell.user_ns.update(token="s3cr3t", city="Lyon")
    first, _ = harness.run("1 + 1")
    n = first.execution_count
    result, captured = harness.run(
        f'%%copilot\ncall with f"Bearer {{token}}" in {{city}}, {{city}} again; {{In[{n}]}}'
    )
    assert result.success
    assert captured.stderr == f"note: inserted {{token}}, {{city}}, {{In[{n}]}}\n"
    assert "s3cr3t" in harness.engine().tasks[0].prompt  # substitution is kept, but never silent
    result, captured = harness.run("%%copilot\nno braces here")
    assert captured.stderr == ""


def test_in_references_send_the_cell_as_typed(harness: Harness) -> None:
    first, _ = harness.run("%%copilot\nfirst question")
    result, _ = harness.run(f"%%copilot\nwhat did {{In[{first.execution_count}]}} ask?")
    assert result.success
    assert harness.engine().tasks[-1].prompt == "what did %%copilot\nfirst question ask?"


def test_a_variable_that_cannot_be_inserted_is_one_line(harness: Harness) -> None:
    class Broken:
        def __str__(self) -> str:
            raise ValueError("boom")

    harness.shell.user_ns["b"] = Broken()
    result, captured = harness.run("%%copilot\nlook at {b}")
    assert isinstance(result.error_in_exec, CopilotError)
    assert plain(captured.stdout).strip() == "CopilotError: cannot insert {b}: ValueError: boom"
    assert harness.engines == {}


def test_cell_help_is_printed_not_an_error(harness: Harness) -> None:
    for flag in ("--help", "-h", "--user bob --help"):
        result, captured = harness.run(f"%%copilot {flag}\nignored")
        assert result.success
        out = plain(captured.stdout)
        assert out.startswith("  %%copilot [--user USER] [--model MODEL]")
        assert "::" not in out
        assert "--no-stream" in out
    assert harness.engines == {}


def test_failures_before_the_request_are_recorded_once(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_magic.magic import failure as failure_module

    calls: list[object] = []
    real = failure_module.describe_error

    def counting(error: BaseException, **kwargs: Any) -> str | None:
        calls.append(error)
        return real(error, **kwargs)

    monkeypatch.setattr(failure_module, "describe_error", counting)
    monkeypatch.setenv("ARC_SAGA_COPILOT_ENDPOINT", "http://example.com/chat/completions")
    result, _ = harness.run("%%copilot\nhi")
    assert isinstance(result.error_in_exec, CopilotError)
    assert len(calls) == 1  # described once, not again by the magic
    last = harness.session.last
    assert last is not None
    assert last.error is not None
    assert last.error.startswith("configuration: ARC_SAGA_COPILOT_ENDPOINT uses plain http://")


def test_a_display_failure_cancels_the_request(harness: Harness) -> None:
    harness.configure = lambda e: (setattr(e, "retries", [{}]), setattr(e, "block", True))

    def broken_display(*_: Any, **__: Any) -> Any:
        raise RuntimeError("front end gone")

    with pytest.raises(RuntimeError, match="front end gone"):
        cell_module.run_cell(
            harness.session,
            harness.shell.user_ns,
            CellOptions(),
            "hi",
            display=broken_display,
            warn=lambda line: None,
        )
    engine = harness.engine()
    assert engine.cancelled  # the request did not outlive the cell


def test_a_second_interrupt_during_the_cleanup_is_still_one_line(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saga_magic.magic.runner import Job

    def interrupted_wait(job: Any, *args: Any) -> None:
        while not harness.engines or not harness.engine().tasks:
            job.wait(0.01)
        raise KeyboardInterrupt

    real_cancel = Job.cancel

    def impatient_cancel(self: Job[Any], *, wait: float = 2.0) -> bool:
        real_cancel(self, wait=0)
        raise KeyboardInterrupt  # Ctrl-C again while waiting for the cleanup

    harness.configure = lambda e: setattr(e, "block", True)
    monkeypatch.setattr(cell_module, "_wait", interrupted_wait)
    monkeypatch.setattr(Job, "cancel", impatient_cancel)
    result, captured = harness.run("%%copilot\nwait")
    monkeypatch.setattr(Job, "cancel", real_cancel)
    assert isinstance(result.error_in_exec, CopilotInterrupted)
    assert plain(captured.stdout).strip() == (
        "KeyboardInterrupt: interrupted: the request was cancelled; the kernel is ready"
    )
