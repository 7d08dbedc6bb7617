"""Options of ``%%copilot`` and the subcommands of ``%copilot``, with their help texts.

Every option and every subcommand carries help (a test walks the parsers). Parsing errors are
IPython ``UsageError``\\ s: one line, no traceback.
"""

from __future__ import annotations

import keyword
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import IPython.core.magic_arguments as _magic_arguments
from IPython.core.error import UsageError
from IPython.utils.text import dedent

__all__ = [
    "FORMATS",
    "SUBCOMMANDS",
    "CellOptions",
    "Subcommand",
    "cell_arguments",
    "cell_help",
    "parse_cell_options",
    "parse_subcommand",
    "subcommand_help",
    "wants_help",
]

F = TypeVar("F", bound=Callable[..., Any])
# IPython's magic_arguments is untyped: use it through Any at this one boundary.
_args: Any = _magic_arguments
MagicArgumentParser = _magic_arguments.MagicArgumentParser
argument: Any = _args.argument
magic_arguments: Any = _args.magic_arguments
Format = Literal["markdown", "text", "code", "json"]
FORMATS: tuple[Format, ...] = ("markdown", "text", "code", "json")
"""Values of ``--format``."""


def cell_arguments(func: F) -> F:
    """Attach the ``%%copilot`` options (and their help) to the cell magic ``func``.

    Args:
        func: The cell-magic method.

    Returns:
        ``func``, with a parser and a generated docstring.
    """
    decorators = [
        magic_arguments(),
        argument(
            "--user", metavar="USER", help="user id whose token to use (default: ARC_SAGA_USER)"
        ),
        argument(
            "--model",
            metavar="MODEL",
            help="model / deployment name: on an Azure deployments URL it replaces the URL's "
            "deployment; on other endpoints it is sent as the request's model",
        ),
        argument("--system", metavar="TEXT", help="system prompt sent before the conversation"),
        argument(
            "--max-tokens",
            metavar="N",
            type=int,
            help="cap on the answer's length in tokens (a positive integer)",
        ),
        argument(
            "--temperature", metavar="T", type=float, help="sampling temperature, from 0 to 2"
        ),
        argument(
            "--format",
            metavar="FORMAT",
            default="markdown",
            help="how to render the answer: markdown (default), text, code (fenced code) or json "
            "(parsed; the cell fails if the answer is not JSON)",
        ),
        argument(
            "-o",
            "--output",
            metavar="NAME",
            help="also store the AIResult in this variable (the last one is always in _copilot)",
        ),
        argument(
            "--no-stream",
            action="store_true",
            help="wait for the whole answer instead of streaming it into the cell",
        ),
        argument(
            "--new",
            action="store_true",
            help="start a fresh conversation for this user (forget earlier cells)",
        ),
    ]
    decorated: Any = func
    decorated.argcmd_name = "%copilot"  # usage reads "%%copilot [...]" (IPython adds one "%")
    for decorator in reversed(decorators):
        decorated = decorator(decorated)
    return cast("F", decorated)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellOptions:
    """The validated options of one ``%%copilot`` cell."""

    user: str | None = None
    """User id (``None``: the configured default)."""
    model: str | None = None
    """Model / deployment name override."""
    system: str | None = None
    """System prompt."""
    max_tokens: int | None = None
    """Answer length cap."""
    temperature: float | None = None
    """Sampling temperature."""
    format: Format = "markdown"
    """Rendering of the answer."""
    output: str | None = None
    """Variable to store the ``AIResult`` in."""
    stream: bool = True
    """Stream the answer as it arrives."""
    new: bool = False
    """Start a fresh conversation."""


def _split(line: str) -> list[str]:
    # POSIX rules (quotes removed: --system "be brief"); IPython's arg_split keeps the quotes.
    try:
        return shlex.split(line)
    except ValueError as error:  # unbalanced quotes
        raise UsageError(f"cannot parse the options: {error}") from None


def _check_name(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"-o/--output needs a Python variable name, got {name!r}")
    return name


def _strip_rst(text: str) -> str:
    # MagicHelpFormatter starts the usage with "::" for the RST docstring; not for printing.
    return text.removeprefix("::\n\n")


def wants_help(line: str) -> bool:
    """Tell whether a ``%%copilot`` option line asks for help (``-h`` / ``--help``).

    Args:
        line: The text after ``%%copilot``.

    Returns:
        True when the help should be printed instead of asking.

    Raises:
        UsageError: unbalanced quotes.
    """
    return bool({"-h", "--help"} & set(_split(line)))


def cell_help(magic: Callable[..., Any]) -> str:
    """Return the help of the ``%%copilot`` cell magic (usage, description, options).

    Args:
        magic: The cell-magic function decorated with :func:`cell_arguments`.

    Returns:
        Help text.
    """
    parser: MagicArgumentParser = cast("Any", magic).parser
    return _strip_rst(parser.format_help())


def parse_cell_options(magic: Callable[..., Any], line: str) -> CellOptions:
    """Parse and validate the option line of a ``%%copilot`` cell.

    Args:
        magic: The cell-magic function decorated with :func:`cell_arguments`.
        line: The text after ``%%copilot``.

    Returns:
        The options.

    Raises:
        UsageError: an unknown option, a malformed value, or a value out of range.
    """
    parser: MagicArgumentParser = cast("Any", magic).parser
    args = _single_values(parser, parser.parse_args(_split(line)))
    if args.format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise UsageError(f"--max-tokens must be a positive integer, got {args.max_tokens}")
    temperature = args.temperature
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise UsageError(f"--temperature must be between 0 and 2, got {temperature}")
    for name in ("user", "model"):
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise UsageError(f"--{name} must not be empty")
    return CellOptions(
        user=args.user,
        model=args.model,
        system=args.system,
        max_tokens=args.max_tokens,
        temperature=temperature,
        format=args.format,
        output=_check_name(args.output) if args.output is not None else None,
        stream=not args.no_stream,
        new=args.new,
    )


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One ``%copilot`` subcommand: its name, one-line summary and parser."""

    name: str
    """What follows ``%copilot``."""
    summary: str
    """One line for ``%copilot help``."""
    parser: MagicArgumentParser
    """Parser of its options (every option has help)."""


def _parser(
    name: str, summary: str, *options: tuple[tuple[str, ...], dict[str, Any]]
) -> Subcommand:
    parser: MagicArgumentParser = _args.MagicArgumentParser(
        prog=f"copilot {name}", description=summary
    )
    for flags, kwargs in options:
        parser.add_argument(*flags, **kwargs)
    return Subcommand(name, summary, parser)


_USER = (("--user",), {"metavar": "USER", "help": "user id (default: ARC_SAGA_USER)"})

SUBCOMMANDS: dict[str, Subcommand] = {
    item.name: item
    for item in (
        _parser(
            "status",
            "token state per user (with expiry countdown), endpoint, and the last request",
        ),
        _parser(
            "login",
            "sign in with the device-code flow: shows a code and a link, waits (interrupt cancels)",
            _USER,
        ),
        _parser("logout", "forget the stored token of a user", _USER),
        _parser(
            "reset",
            "start a fresh conversation (forget earlier cells)",
            _USER,
            (("--all",), {"action": "store_true", "help": "reset every user's conversation"}),
        ),
        _parser(
            "memory",
            "show the conversation kept per user, or change how many turns it keeps",
            (
                ("--turns",),
                {
                    "metavar": "N",
                    "type": int,
                    "help": "keep at most N question/answer turns per user (default 20)",
                },
            ),
            (
                ("--chars",),
                {
                    "metavar": "N",
                    "type": int,
                    "help": "keep at most N characters of questions and answers per user; the "
                    "oldest turns go first (default 100000)",
                },
            ),
        ),
        _parser("config", "effective settings (secrets masked)"),
        _parser(
            "log",
            "recent events of this kernel (token refreshes, retries, requests)",
            (
                ("-n",),
                {
                    "metavar": "N",
                    "type": int,
                    "default": 20,
                    "help": "how many events, 1 or more (default 20)",
                },
            ),
            (
                ("--event",),
                {
                    "metavar": "NAME",
                    "help": "only events whose name contains NAME, e.g. --event retry",
                },
            ),
        ),
        _parser(
            "sandbox",
            "start the local Entra ID + chat emulator, point this kernel at it and sign in a "
            "demo user (zero-setup trial)",
            (
                ("--script",),
                {
                    "nargs": "+",
                    "metavar": "ITEM",
                    "help": "queue faults: an endpoint (chat, token or devicecode) then fault "
                    "names, e.g. --script chat 429:retry_after=1 ok",
                },
            ),
            (
                ("--reset",),
                {"action": "store_true", "help": "clear scripted faults and recorded requests"},
            ),
            (
                ("--stop",),
                {"action": "store_true", "help": "stop the emulator and restore the settings"},
            ),
        ),
        _parser(
            "help",
            "this list; %copilot help SUBCOMMAND (or SUBCOMMAND --help) shows its options",
            (
                ("topic",),
                {"nargs": "?", "metavar": "SUBCOMMAND", "help": "show this subcommand's options"},
            ),
        ),
    )
}
"""Subcommands of the ``%copilot`` line magic, in help order."""


def subcommand_help(name: str | None = None) -> str:
    """Return the help of one subcommand, or the overview of all of them.

    Args:
        name: A subcommand, or ``None`` for the overview.

    Returns:
        Help text.
    """
    if name is not None:
        return _strip_rst(SUBCOMMANDS[name].parser.format_help())
    width = max(len(item) for item in SUBCOMMANDS)
    lines = ["%copilot SUBCOMMAND [options]  (see also %%copilot --help for the cell magic)", ""]
    lines += [f"  {item.name:<{width}}  {item.summary}" for item in SUBCOMMANDS.values()]
    lines += [
        "",
        "The first %%copilot cell or %copilot subcommand (help excepted) reads the settings and",
        "installs the event journal (ARC_SAGA_JOURNAL_PATH), so a saga-tui can watch this kernel;",
        "%load_ext itself writes nothing.",
    ]
    return "\n".join(lines)


def parse_subcommand(line: str) -> tuple[str, Any]:
    """Split a ``%copilot`` line into a subcommand and its parsed options.

    ``-h`` / ``--help`` anywhere, or an empty line, asks for help (returned as ``("help",
    namespace)`` with ``topic`` set).

    Args:
        line: The text after ``%copilot``.

    Returns:
        The subcommand name and an ``argparse.Namespace``.

    Raises:
        UsageError: an unknown subcommand or option.
    """
    words = _split(line)
    help_parser = SUBCOMMANDS["help"].parser
    if not words or words[0] in ("-h", "--help"):
        return "help", help_parser.parse_args([])
    name, rest = words[0], words[1:]
    if name not in SUBCOMMANDS:
        raise UsageError(
            f"unknown subcommand {name!r}; one of: {', '.join(SUBCOMMANDS)} "
            "(%%copilot is the cell magic that asks a question)"
        )
    if {"-h", "--help"} & set(rest):
        return "help", help_parser.parse_args([name])
    parser = SUBCOMMANDS[name].parser
    return name, _single_values(parser, parser.parse_args(rest))


def _single_values(parser: MagicArgumentParser, args: Any) -> Any:
    # argparse turns an attached "--" (``--user=--``, ``-o--``) into ``[]`` even for a
    # single-value option: refuse it here rather than pass a list on.
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if isinstance(value, list) and action.nargs in (None, "?"):
            name = max(action.option_strings, key=len, default=action.dest)
            raise UsageError(f"{name} needs a value, got '--'")
    return args


def usage_lines() -> str:
    """Docstring text of the line magic: the overview plus every subcommand's options.

    Returns:
        Help text.
    """
    parts = [subcommand_help()]
    parts += [item.parser.format_help() for item in SUBCOMMANDS.values()]
    return dedent("\n".join(parts))
