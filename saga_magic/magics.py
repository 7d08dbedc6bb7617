"""``%%copilot`` (ask) and ``%copilot`` (status, login, logout, reset, memory, config, log,
sandbox, help): the IPython / Jupyter extension.

``%load_ext saga_magic`` registers :class:`CopilotMagics`; it imports neither the core's HTTP
stack nor Textual (the core loads on first use), and writes nothing, so loading stays fast. The
first ``%%copilot`` cell or ``%copilot`` subcommand (``help`` excepted) reads the settings and
installs the event journal (``ARC_SAGA_JOURNAL_PATH``) that a ``saga-tui`` in another process
tails. The implementation lives in :mod:`saga_magic.magic`: options, interpolation, rendering,
the loop thread, the subcommands.

Option lines are parsed as typed: IPython's ``{expression}`` / ``$name`` expansion is off for
both magics (``@no_var_expand``), so ``--system "cost in $"`` or ``-o {x}`` never run code; the
cell body's ``{name}`` references are the magic's own, safe interpolation.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import IPython.core.magic as _ipython_magic
from IPython.core.magic import Magics, magics_class

from .magic.failure import CopilotError, CopilotInterrupted, failure
from .magic.options import (
    cell_arguments,
    cell_help,
    parse_cell_options,
    parse_subcommand,
    usage_lines,
    wants_help,
)
from .magic.session import CopilotSession
from .magic.terminal import is_terminal

__all__ = [
    "CopilotError",
    "CopilotInterrupted",
    "CopilotMagics",
    "load_ipython_extension",
    "unload_ipython_extension",
]


_F = TypeVar("_F", bound=Callable[..., Any])


class _Registrar(Protocol):
    def __call__(self, func: _F, /) -> _F: ...


class _MagicDecorator(Protocol):
    def __call__(self, name: str, /) -> _Registrar: ...


# IPython's decorators are only partially typed: give them a type at this one boundary.
_magic: Any = _ipython_magic
cell_magic: _MagicDecorator = _magic.cell_magic
line_magic: _MagicDecorator = _magic.line_magic
no_var_expand: _Registrar = _magic.no_var_expand


def _print(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@magics_class
class CopilotMagics(Magics):
    """The ``%%copilot`` cell magic and the ``%copilot`` line magic.

    Args:
        shell: The ``InteractiveShell``.
        session: The session to use (tests inject one with fakes); a fresh one by default.
    """

    def __init__(self, shell: Any, *, session: CopilotSession | None = None) -> None:
        super().__init__(shell)
        self.session = session if session is not None else CopilotSession()
        """Settings, loop thread, core objects, conversations and events of this load."""

    @property
    def max_turns(self) -> int:
        """Conversation turns kept per user (also ``%copilot memory --turns N``)."""
        return self.session.memory.max_turns

    @max_turns.setter
    def max_turns(self, value: int) -> None:
        self.session.memory.max_turns = value

    def _terminal(self) -> bool:
        return is_terminal(self.shell)

    @cell_magic("copilot")
    @no_var_expand
    @cell_arguments
    def copilot_cell(self, line: str, cell: str) -> None:
        """Ask Copilot: the cell body is the prompt.

        ``{name}`` inserts a variable, ``{In[3]}`` / ``{Out[3]}`` / ``{Err[3]}`` an earlier
        cell's input (as typed), output or error; any other brace is sent as typed, and a note
        lists what was inserted. Consecutive cells continue one conversation per user. The
        answer streams in as Markdown (raw HTML shown, never run) and is stored in ``_copilot``
        (an ``AIResult``). Failures fail the cell with one line. ``%%copilot --help`` prints
        this help.
        """
        from IPython.display import display

        from .magic.cell import run_cell

        if wants_help(line):
            _print(cell_help(self.copilot_cell))
            return
        options = parse_cell_options(self.copilot_cell, line)
        shell: Any = self.shell
        try:
            run_cell(
                self.session,
                shell.user_ns,
                options,
                cell,
                display=display,
                warn=_warn,
                inputs=shell.history_manager.input_hist_raw,
                write=_write if self._terminal() else None,
            )
        except CopilotInterrupted:
            raise
        except KeyboardInterrupt:
            raise CopilotInterrupted() from None

    @line_magic("copilot")
    @no_var_expand
    def copilot_line(self, line: str) -> None:
        """Manage the Copilot extension; ``%copilot help`` lists the subcommands."""
        from .magic.commands import COMMANDS

        name, args = parse_subcommand(line)
        session = self.session
        try:
            if name != "help":
                session.observe()  # every subcommand starts the event journal
            COMMANDS[name](session, args, _print)
        except (CopilotError, CopilotInterrupted):
            raise
        except KeyboardInterrupt:
            raise CopilotInterrupted(f"%copilot {name} interrupted") from None
        except Exception as error:
            wrapped = failure(
                error,
                user=getattr(args, "user", None) or session.default_user,
                default_user=session.default_user,
                now=session.clock(),
            )
            if wrapped is None:
                raise
            raise wrapped from error


CopilotMagics.copilot_line.__doc__ = usage_lines()

_LOADED: weakref.WeakKeyDictionary[Any, CopilotMagics] = weakref.WeakKeyDictionary()
"""The magics registered on each shell (weak: a shell that goes away takes its entry along)."""


def load_ipython_extension(ipython: Any, *, session: CopilotSession | None = None) -> None:
    """Register the magics (``%load_ext saga_magic``); loading twice is a no-op.

    Loading writes nothing and reads no setting: the first ``%%copilot`` cell or ``%copilot``
    subcommand (``help`` excepted) does, and installs the event journal then.

    Args:
        ipython: The running ``InteractiveShell``.
        session: A prepared session (tests inject fakes); a fresh one by default.
    """
    if ipython in _LOADED:
        return
    magics = CopilotMagics(ipython, session=session)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.session.errors.on_post_run_cell)
    _LOADED[ipython] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the loop thread, close the core and the sandbox, unregister the magics.

    Prints one line when something is lost with it (a running sandbox, conversation turns), so
    a ``%reload_ext`` does not drop them silently.

    Args:
        ipython: The running ``InteractiveShell``.
    """
    magics = _LOADED.pop(ipython, None)
    if magics is None:
        return
    session = magics.session
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        table = manager.magics[kind]
        if getattr(table.get("copilot"), "__self__", None) is magics:
            del table["copilot"]
    if manager.registry.get(type(magics).__name__) is magics:
        del manager.registry[type(magics).__name__]
    callbacks = ipython.events.callbacks["post_run_cell"]
    if session.errors.on_post_run_cell in callbacks:
        ipython.events.unregister("post_run_cell", session.errors.on_post_run_cell)
    lost: list[str] = []
    if session.sandbox is not None:
        lost.append("the sandbox was stopped")
    turns = session.memory.reset()
    if turns:
        lost.append(f"{turns} conversation turn(s) were forgotten")
    session.close()
    if lost:
        _print(f"saga_magic unloaded: {' and '.join(lost)}")
