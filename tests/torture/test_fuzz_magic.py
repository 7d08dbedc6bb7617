"""Issue 6 item 6 (the magic): fuzzing option lines and prompt interpolation.

Targets:

* the option parsers (:mod:`saga_magic.magic.options`), called directly: random ``%%copilot``
  option lines and ``%copilot <subcommand>`` lines (option words, hostile values, quoting, and
  raw text) -> validated options, or a ``UsageError``; nothing else;
* :func:`saga_magic.magic.interpolate.interpolate`: random templates full of braces -> with an
  empty namespace the text is returned unchanged; against a grammar of references (bound and
  unbound names, escapes, expressions, format specs, ``In``/``Out``/``Err``) the exact expected
  text; on any template only ``CopilotError`` (a value whose ``str()`` raises), never a format
  error, never a value inserted recursively;
* the same through an IPython shell: ``%copilot <line>`` and ``%%copilot <line>`` cells with
  random bodies on a session with an echoing fake engine -> the cell succeeds or fails with
  ``UsageError`` / ``CopilotError``.

Nothing is ever evaluated: the namespace holds ``canary`` (a function that records its calls)
and ``trap`` (an object that records every call, attribute or item access, ``format`` and
``repr``). In option lines even its ``str()`` is never taken (``@no_var_expand``); in a cell
body ``{trap}`` inserts ``str(trap)``, by design, and nothing else is touched.

Found by this fuzzing, fixed in ``options.py`` since (regression tests below): an option given
an attached ``--`` (``--user=--``, ``-o--``, ``-n--``) came out of argparse as ``[]`` and was
passed on (``AttributeError`` / ``TypeError``, or a list as ``--system``) instead of a
``UsageError``.
Shell inputs leave out what IPython itself interprets before the magic sees it: a line break
(any ``str.splitlines`` separator, ``\x85`` and ``\u2028`` included: the rest of the line runs
as Python), a trailing ``?`` (IPython's help), and lone surrogates (not valid in a notebook);
``%copilot sandbox`` is not started (scripting it while stopped is tried).

CI: 200 examples per target (100 per shell target), derandomized, no example database; the
benchmark run (``--torture-full``) uses 10,000 per target (about 5 minutes).
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from torture_helpers import Report, Scale
from traitlets.config import Config

from saga_magic.core.types import AIProvider, AIResult, AITask, TokenUsage
from saga_magic.magic.failure import CopilotError
from saga_magic.magic.interpolate import ErrorLog, Interpolation, interpolate
from saga_magic.magic.options import FORMATS, SUBCOMMANDS, parse_cell_options, parse_subcommand
from saga_magic.magic.options import wants_help as asks_help
from saga_magic.magic.session import CopilotSession
from saga_magic.magics import CopilotMagics, load_ipython_extension, unload_ipython_extension

pytestmark = pytest.mark.torture

CELL = CopilotMagics.copilot_cell
"""The decorated cell magic (its ``parser`` is what the magic parses with)."""
DOCUMENTED = (UsageError, CopilotError)
"""What a ``%%copilot`` / ``%copilot`` line may raise."""
_COUNTS: dict[str, dict[str, int]] = {}


def count(target: str, key: str = "examples") -> None:
    bucket = _COUNTS.setdefault(target, {"examples": 0})
    bucket[key] = bucket.get(key, 0) + 1


def sizes(scale: Scale) -> tuple[int, int]:
    """Examples per direct target and per shell target."""
    return scale.pick(200, 10_000), scale.pick(100, 10_000)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


@pytest.fixture(scope="module")
def fuzz(scale: Scale) -> settings:
    return _settings(sizes(scale)[0])


@pytest.fixture(scope="module")
def fuzz_shell(scale: Scale) -> settings:
    return _settings(sizes(scale)[1])


@pytest.fixture(scope="module", autouse=True)
def _report_counts(report: Report, scale: Scale) -> Iterator[None]:
    yield
    direct, shell = sizes(scale)
    report(
        "fuzz_magic",
        {
            "examples_per_target": direct,
            "examples_per_shell_target": shell,
            "targets": len(_COUNTS),
            "examples": sum(c["examples"] for c in _COUNTS.values()),
            "undocumented_exceptions": 0,  # any would have failed its test
            "evaluations": 0,  # likewise
            "by_target": _COUNTS,
        },
    )


# -- the canaries ---------------------------------------------------------------------------------


class Trap:
    """Records everything done to it; only ``str()`` is ever allowed (a ``{trap}`` reference)."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Trap:
        self.touched.append("call")
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self.touched.append(f"getattr {name}")
        return self

    def __getitem__(self, key: Any) -> Trap:
        self.touched.append("getitem")
        return self

    def __format__(self, spec: str) -> str:
        self.touched.append("format")
        return "FORMATTED"

    def __repr__(self) -> str:
        self.touched.append("repr")
        return "TRAP-REPR"

    def __str__(self) -> str:
        self.touched.append("str")
        return "TRAP"

    def misused(self) -> list[str]:
        """What was done to it besides ``str()``."""
        return [what for what in self.touched if what != "str"]


class Broken:
    """A value whose ``str()`` raises: inserting it is a documented one-line failure."""

    def __str__(self) -> str:
        raise ValueError("boom")


class Canaries:
    """A fresh ``canary`` function and ``trap`` object."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.trap = Trap()

    def canary(self, *args: Any) -> str:
        self.calls.append(args)
        return "CANARY-CALLED"

    def namespace(self) -> dict[str, Any]:
        return {"canary": self.canary, "trap": self.trap}

    def evaluated(self, *, str_allowed: bool) -> list[str]:
        """Evidence of evaluation (empty when nothing ran)."""
        found = [f"canary called {args}" for args in self.calls]
        found += self.trap.misused() if str_allowed else self.trap.touched
        return found


# -- option lines ---------------------------------------------------------------------------------

HOSTILE = [
    *FORMATS,
    "yaml",
    "0",
    "-1",
    "1",
    "2",
    "2.0000001",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "0x10",
    "1_000",
    "٣",
    "",
    " ",
    "class",
    "None",
    "_copilot",
    "x y",
    "café",
    "{canary()}",
    "{canary}",
    "$canary",
    "$(canary())",
    "`canary()`",
    "{trap}",
    "{trap.x}",
    "{trap!r}",
    "{trap:>10}",
    "{{trap}}",
    "{1/0}",
    "'",
    '"',
    "\\",
    "#",
    "--",
    "-",
    "=",
]
values = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(repr),
    st.text(max_size=16),
)


def either(valid: st.SearchStrategy[str]) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    """A value strategy for well-formed lines, and one for hostile lines (valid or not)."""
    return valid, st.one_of(valid, values)


NAMES = either(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True))
NUMBERS = either(st.integers(min_value=-3, max_value=10**6).map(str))
TEMPERATURES = either(st.floats(min_value=-0.5, max_value=2.5).map(repr))
FORMAT_NAMES = either(st.sampled_from(FORMATS))
TEXTS = either(st.text(max_size=16))
Option = tuple[str, tuple[st.SearchStrategy[str], st.SearchStrategy[str]] | None]


def _words(options: list[Option], *, hostile: bool) -> st.SearchStrategy[list[str]]:
    """One option as words: the flag, then a value (well-formed, or possibly hostile)."""
    choices = [
        st.just([flag]) if value is None else value[hostile].map(functools.partial(_pair, flag))
        for flag, value in options
    ]
    return st.one_of(*choices)


def _pair(flag: str, value: str) -> list[str]:
    return [flag, value]


def _written(words: list[str], how: str) -> str:
    """Write words as a user might: shell-quoted, raw, or ``--flag=value``."""
    if how == "raw":
        return " ".join(words)
    if how == "glued" and len(words) == 2:
        return f"{words[0]}={shlex.quote(words[1])}"
    return " ".join(shlex.quote(word) for word in words)


def _line(options: list[Option], prefix: str = "") -> st.SearchStrategy[str]:
    """Option lines: well-formed ones, hostile ones (values, noise, quoting), and raw text."""
    well_formed = st.lists(_words(options, hostile=False), max_size=5).map(
        lambda items: " ".join([prefix, *(_written(words, "quoted") for words in items)]).strip()
    )
    noise = st.lists(st.sampled_from(["-h", "--help", "--bogus", "-x", "--", "-"]) | values)
    written = st.tuples(
        _words(options, hostile=True) | noise, st.sampled_from(["quoted", "raw", "glued"])
    )
    hostile = st.lists(written, max_size=6).map(
        lambda items: " ".join([prefix, *(_written(words, how) for words, how in items)]).strip()
    )
    return st.one_of(
        well_formed,
        hostile,
        st.text(max_size=60).map(lambda text: f"{prefix} {text}".strip()),
        st.text(alphabet=" -=\"'\\{}$#ab01", max_size=30).map(lambda t: f"{prefix} {t}".strip()),
    )


cell_lines = _line(
    [
        ("--user", NAMES),
        ("--model", NAMES),
        ("--system", TEXTS),
        ("--max-tokens", NUMBERS),
        ("--max", NUMBERS),
        ("--temperature", TEMPERATURES),
        ("--format", FORMAT_NAMES),
        ("-o", NAMES),
        ("--output", NAMES),
        ("--no-stream", None),
        ("--new", None),
    ]
)
SUBCOMMAND_OPTIONS: dict[str, list[Option]] = {
    "status": [],
    "config": [],
    "login": [("--user", NAMES)],
    "logout": [("--user", NAMES)],
    "reset": [("--user", NAMES), ("--all", None)],
    "memory": [("--turns", NUMBERS), ("--chars", NUMBERS)],
    "log": [("-n", NUMBERS), ("--event", TEXTS)],
    "sandbox": [
        ("--script", either(st.sampled_from(["chat", "token", "devicecode"]))),
        ("--reset", None),
        ("--stop", None),
    ],
    "help": [("status", None), ("log", None), ("sandbox", None), ("bogus", None)],
}
subcommand_lines = st.one_of(
    *(_line(options or [("--bogus", None)], name) for name, options in SUBCOMMAND_OPTIONS.items()),
    st.tuples(st.sampled_from(["", "bogus", "-h", "--help", "STATUS"]), st.text(max_size=30)).map(
        " ".join
    ),
    st.text(max_size=60),
)
assert SUBCOMMAND_OPTIONS.keys() == SUBCOMMANDS.keys()


def attempt(
    call: Callable[[], Any], expected: type[BaseException] | tuple[type[BaseException], ...]
) -> tuple[Any, Any]:
    """Return ``(call(), None)``, or ``(None, error)`` when it raised ``expected``."""
    try:
        return call(), None
    except expected as error:
        return None, error


def test_cell_option_lines(fuzz: settings) -> None:
    @fuzz
    @given(cell_lines)
    def check(line: str) -> None:
        count("options.cell")
        wants, error = attempt(lambda: asks_help(line), UsageError)
        if wants:
            count("options.cell", "help")
            return
        if error is None:
            options, error = attempt(lambda: parse_cell_options(CELL, line), UsageError)
        if error is not None:
            count("options.cell", "usage_error")
            assert str(error)
            return
        count("options.cell", "parsed")
        assert options.format in FORMATS
        assert options.max_tokens is None or options.max_tokens > 0
        assert options.temperature is None or 0 <= options.temperature <= 2
        assert options.output is None or options.output.isidentifier()
        assert all(v is None or v.strip() for v in (options.user, options.model))
        assert options.system is None or isinstance(options.system, str)

    check()


def test_subcommand_lines(fuzz: settings) -> None:
    @fuzz
    @given(subcommand_lines)
    def check(line: str) -> None:
        count("options.subcommand")
        parsed, error = attempt(lambda: parse_subcommand(line), UsageError)
        if error is not None:
            count("options.subcommand", "usage_error")
            assert str(error)
            return
        name, args = parsed
        count("options.subcommand", "parsed")
        assert name in SUBCOMMANDS
        scalars = {k: v for k, v in vars(args).items() if k != "script"}
        assert all(v is None or isinstance(v, str | int | bool) for v in scalars.values())
        if name == "log":
            assert isinstance(args.n, int)

    check()


@pytest.mark.parametrize(
    "line", ["--user=--", "-o--", "-o=--", "--max-tokens=--", "--temperature=--", "--system=--"]
)
def test_attached_double_dash_in_a_cell_line_is_a_usage_error(line: str) -> None:
    with pytest.raises(UsageError):
        parse_cell_options(CELL, line)


@pytest.mark.parametrize("line", ["log --event=--", "log -n--", "memory --turns=--"])
def test_attached_double_dash_in_a_subcommand_is_a_usage_error(line: str) -> None:
    with pytest.raises(UsageError):
        parse_subcommand(line)


# -- interpolation --------------------------------------------------------------------------------

BRACES = "{}[]()!:.$ \n\"'%,0123456789"
brace_text = st.text(
    alphabet=st.one_of(st.sampled_from(list(BRACES)), st.characters(codec="utf-8")), max_size=80
) | st.lists(
    st.sampled_from(
        [
            *("{", "}", "{{", "}}", "In[1]", "Out[1]", "Err[1]", "In[9]", "Err[2]"),
            *("trap", "canary()", "broken", "nested", "x", "café", "a b", "!r", ":>4", "."),
            *("{trap}", "{broken}", "{nested}", "{x}", "{In[1]}", "{Out[2]}", "{Err[1]}"),
        ]
    ),
    max_size=12,
).map("".join)


def test_interpolation_without_bindings_changes_nothing(fuzz: settings) -> None:
    @fuzz
    @given(brace_text)
    def check(template: str) -> None:
        count("interpolate.unbound")
        result = interpolate(template, {})
        assert result.text == template
        assert result.replaced == ()
        assert all(ref.startswith(("In[", "Out[", "Err[")) for ref in result.missing)

    check()


def _namespace(canaries: Canaries) -> tuple[dict[str, Any], ErrorLog, list[str]]:
    errors = ErrorLog()
    errors.record(1, ValueError("bad value"))
    namespace = {
        **canaries.namespace(),
        "x": 41,
        "city": "Lyon",
        "café": "crème",
        "nested": "{trap}{canary()}{x}",
        "Out": {1: "one", 2: 2.5},
        "broken": Broken(),
    }
    return namespace, errors, ["", "first cell {x}"]


# (template piece, expected text, replaced reference or None, missing reference or None)
Piece = tuple[str, str, str | None, str | None]
PIECES: list[Piece] = [
    ("{x}", "41", "x", None),
    ("{city}", "Lyon", "city", None),
    ("{café}", "crème", "café", None),
    ("{nested}", "{trap}{canary()}{x}", "nested", None),  # inserted as is, never re-read
    ("{trap}", "TRAP", "trap", None),
    ("{In[1]}", "first cell {x}", "In[1]", None),
    ("{In[01]}", "first cell {x}", "In[1]", None),
    ("{Out[1]}", "one", "Out[1]", None),
    ("{Out[2]}", "2.5", "Out[2]", None),
    ("{Err[1]}", "ValueError: bad value", "Err[1]", None),
    ("{Out}", "{1: 'one', 2: 2.5}", "Out", None),
    ("{In[0]}", "{In[0]}", None, "In[0]"),
    ("{In[7]}", "{In[7]}", None, "In[7]"),
    ("{Out[9]}", "{Out[9]}", None, "Out[9]"),
    ("{Err[2]}", "{Err[2]}", None, "Err[2]"),
]
KEPT = [
    "{unknown}",
    "{{x}}",
    "{{trap}}",
    "{x + 1}",
    "{trap!r}",
    "{trap!s}",
    "{trap:>10}",
    "{trap.attr}",
    "{trap[0]}",
    "{canary()}",
    '{"a": 1}',
    "{k: v for k, v in d.items()}",
    "{}",
    "{ x }",
    "{0}",
    "{1x}",
    "{class}",
    "{In[-1]}",
    "{In[x]}",
    "{x!r:>3}",
    "$x",
    "%(x)s",
]
pieces = st.one_of(st.sampled_from(PIECES), st.sampled_from(KEPT).map(lambda t: (t, t, None, None)))
separators = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="{}"), min_size=1, max_size=6
)


def test_interpolation_matches_the_grammar(fuzz: settings) -> None:
    @fuzz
    @given(st.lists(st.tuples(separators, pieces), max_size=8), separators)
    def check(parts: list[tuple[str, Piece]], tail: str) -> None:
        count("interpolate.grammar")
        canaries = Canaries()
        namespace, errors, inputs = _namespace(canaries)
        template = "".join(sep + piece[0] for sep, piece in parts) + tail
        expected = "".join(sep + piece[1] for sep, piece in parts) + tail
        result = interpolate(template, namespace, errors=errors, inputs=inputs)
        assert result == Interpolation(
            text=expected,
            replaced=tuple(p[2] for _, p in parts if p[2] is not None),
            missing=tuple(p[3] for _, p in parts if p[3] is not None),
        )
        assert canaries.evaluated(str_allowed=True) == []

    check()


def test_interpolation_of_anything(fuzz: settings) -> None:
    @fuzz
    @given(brace_text)
    def check(template: str) -> None:
        count("interpolate.any")
        canaries = Canaries()
        namespace, errors, inputs = _namespace(canaries)
        result, error = attempt(
            lambda: interpolate(template, namespace, errors=errors, inputs=inputs), CopilotError
        )
        if error is not None:
            count("interpolate.any", "copilot_error")
            assert "{broken}" in template
            assert str(error) == "cannot insert {broken}: ValueError: boom"
            return
        assert canaries.evaluated(str_allowed=True) == []
        assert "FORMATTED" not in result.text
        assert "TRAP-REPR" not in result.text
        assert "CANARY-CALLED" not in result.text
        assert set(result.replaced) <= {*namespace, "In[1]", "Out[1]", "Out[2]", "Err[1]"}

    check()


# -- through the shell ----------------------------------------------------------------------------


class EchoEngine:
    """Answers with the prompt (streamed in one delta, or whole)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def _result(self, task: AITask) -> AIResult:
        return AIResult(
            response_text=task.prompt,
            finish_reason="stop",
            usage=TokenUsage(1, 1, 2),
            provider=AIProvider.COPILOT_CHAT,
            task_id=task.task_id,
            latency_ms=1.0,
        )

    async def reason(self, task: AITask) -> AIResult:
        self.prompts.append(task.prompt)
        return self._result(task)

    def stream(self, task: AITask) -> EchoStream:
        return EchoStream(self, task)

    async def close(self) -> None:
        pass


class EchoStream:
    """One delta (the prompt), then ``.result``."""

    def __init__(self, engine: EchoEngine, task: AITask) -> None:
        self._engine, self._task = engine, task
        self._sent = False
        self.result: AIResult | None = None

    def __aiter__(self) -> EchoStream:
        return self

    async def __anext__(self) -> str:
        if self._sent:
            self.result = self._engine._result(self._task)
            raise StopAsyncIteration
        self._sent = True
        self._engine.prompts.append(self._task.prompt)
        return self._task.prompt

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def ipython(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """The process-wide ``InteractiveShell`` (created here unless a shell already exists)."""
    if InteractiveShell.initialized():
        yield InteractiveShell.instance()
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        config = Config()
        config.HistoryManager.hist_file = ":memory:"
        shell = InteractiveShell.instance(config=config)
        try:
            yield shell
        finally:
            shell.history_manager.end_session()
            InteractiveShell.clear_instance()


@pytest.fixture
def echo_shell(ipython: InteractiveShell, isolated_env: Path) -> Iterator[InteractiveShell]:
    """The shell with the extension loaded on echoing engines."""
    engines: list[EchoEngine] = []

    def factory(session: CopilotSession, user: str, model: str | None) -> EchoEngine:
        engines.append(EchoEngine())
        return engines[-1]

    session = CopilotSession(engine_factory=factory)
    ipython.reset(new_session=False)
    load_ipython_extension(ipython, session=session)
    try:
        yield ipython
    finally:
        with capture_output():
            unload_ipython_extension(ipython)
        ipython.reset(new_session=False)
        assert not session.runner.running


def _one_line(text: str) -> bool:
    # IPython splits a cell on every str.splitlines() separator: the rest would be Python code.
    return "".join(text.splitlines()) == text and not text.rstrip().endswith("?")


def run(shell: InteractiveShell, source: str, canaries: Canaries) -> tuple[Any, dict[str, Any]]:
    """Run a cell with fresh canaries; return its result and the namespace it left.

    The namespace is restored afterwards (``-o`` may rebind any name, ``get_ipython`` too).
    """
    namespace = shell.user_ns
    saved = dict(namespace)
    namespace.update(canaries.namespace())
    try:
        with capture_output():
            result = shell.run_cell(source, store_history=True)
        return result, dict(namespace)
    finally:
        namespace.clear()
        namespace.update(saved)


def outcome(error: BaseException | None) -> str:
    """How an example ended, for the figures."""
    return "ok" if error is None else type(error).__name__


def test_attached_double_dash_through_the_shell(echo_shell: InteractiveShell) -> None:
    result, _ = run(echo_shell, "%copilot memory --turns=--", Canaries())
    assert isinstance(result.error_in_exec, UsageError), repr(result.error_in_exec)


def test_subcommand_lines_through_the_shell(
    echo_shell: InteractiveShell, fuzz_shell: settings
) -> None:
    @fuzz_shell
    @given(subcommand_lines.filter(_one_line))
    def check(line: str) -> None:
        parsed, _ = attempt(lambda: parse_subcommand(line), UsageError)
        if parsed is not None:  # starting the emulator is not what this is about (scripting it
            name, args = parsed  # fails: it is not running)
            assume(name != "sandbox" or args.stop or args.script or args.reset)
        count("shell.subcommand")
        canaries = Canaries()
        result, _ = run(echo_shell, f"%copilot {line}", canaries)
        assert result.error_before_exec is None
        error = result.error_in_exec
        count("shell.subcommand", outcome(error))
        assert error is None or isinstance(error, DOCUMENTED), repr(error)
        assert canaries.evaluated(str_allowed=False) == []

    check()


bodies = st.one_of(brace_text, brace_text.map(lambda text: f"ask: {text}"))


def test_cells_through_the_shell(echo_shell: InteractiveShell, fuzz_shell: settings) -> None:
    @fuzz_shell
    @given(cell_lines.filter(_one_line), bodies)
    def check(line: str, body: str) -> None:
        count("shell.cell")
        canaries = Canaries()
        result, after = run(echo_shell, f"%%copilot {line}\n{body}", canaries)
        assert result.error_before_exec is None
        error = result.error_in_exec
        count("shell.cell", outcome(error))
        assert error is None or isinstance(error, DOCUMENTED), repr(error)
        assert canaries.evaluated(str_allowed=True) == []
        if "trap" not in body:
            assert canaries.trap.touched == []
        history = any(kind in body for kind in ("In[", "Out[", "Err["))
        if error is None and not history and not asks_help(line):
            # The engine got the body, interpolated once against the namespace it ran in.
            before = {**echo_shell.user_ns, **canaries.namespace()}
            expected = interpolate(body, before).text.strip("\r\n").rstrip()
            assert after["_copilot"].response_text == expected

    check()
