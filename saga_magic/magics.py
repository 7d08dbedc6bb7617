"""``%%copilot`` (ask) and ``%copilot`` (status, login, logout, reset, memory, config, log,
sandbox, help): the IPython / Jupyter extension.

``%load_ext saga_magic`` registers :class:`CopilotMagics`; it imports neither the core's HTTP
stack nor Textual (the core loads on first use), so loading stays fast. The implementation lives
in :mod:`saga_magic.magic`: options, interpolation, rendering, the loop thread, the subcommands.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import IPython.core.magic as _ipython_magic
from IPython.core.magic import Magics, magics_class

from .magic.failure import CopilotError, CopilotInterrupted, describe_error
from .magic.options import cell_arguments, parse_cell_options, parse_subcommand, usage_lines
from .magic.session import CopilotSession

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


def _print(line: str) -> None:
    print(line, flush=True)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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

    def _fail(self, error: Exception, user: str | None = None) -> CopilotError | None:
        default_user = self.session.default_user
        line = describe_error(error, user=user or default_user, default_user=default_user)
        return CopilotError(line) if line is not None else None

    @cell_magic("copilot")
    @cell_arguments
    def copilot_cell(self, line: str, cell: str) -> None:
        """Ask Copilot: the cell body is the prompt.

        ``{name}`` inserts a variable, ``{In[3]}`` / ``{Out[3]}`` / ``{Err[3]}`` an earlier
        cell's input, output or error; any other brace is sent as typed. Consecutive cells
        continue one conversation per user. The answer streams in as Markdown and is stored in
        ``_copilot`` (an ``AIResult``). Failures fail the cell with one line.
        """
        from IPython.display import display

        from .magic.cell import run_cell

        options = parse_cell_options(self.copilot_cell, line)
        try:
            namespace: dict[str, Any] = cast("Any", self.shell).user_ns
            run_cell(self.session, namespace, options, cell, display=display, warn=_warn)
        except (CopilotError, CopilotInterrupted):
            raise
        except Exception as error:
            failure = self._fail(error, options.user)
            if failure is None:
                raise
            raise failure from error

    @line_magic("copilot")
    def copilot_line(self, line: str) -> None:
        """Manage the Copilot extension; ``%copilot help`` lists the subcommands."""
        from .magic.commands import COMMANDS

        name, args = parse_subcommand(line)
        try:
            COMMANDS[name](self.session, args, _print)
        except (CopilotError, CopilotInterrupted):
            raise
        except KeyboardInterrupt:
            raise CopilotInterrupted(f"%copilot {name} interrupted") from None
        except Exception as error:
            failure = self._fail(error, getattr(args, "user", None))
            if failure is None:
                raise
            raise failure from error


CopilotMagics.copilot_line.__doc__ = usage_lines()

_LOADED: dict[int, CopilotMagics] = {}


def load_ipython_extension(ipython: Any, *, session: CopilotSession | None = None) -> None:
    """Register the magics (``%load_ext saga_magic``); loading twice is a no-op.

    Args:
        ipython: The running ``InteractiveShell``.
        session: A prepared session (tests inject fakes); a fresh one by default.
    """
    if id(ipython) in _LOADED:
        return
    magics = CopilotMagics(ipython, session=session)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.session.errors.on_post_run_cell)
    _LOADED[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Stop the loop thread, close the core and the sandbox, unregister the magics.

    Args:
        ipython: The running ``InteractiveShell``.
    """
    magics = _LOADED.pop(id(ipython), None)
    if magics is None:
        return
    session = magics.session
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        if getattr(table.get("copilot"), "__self__", None) is magics:
            del table["copilot"]
    with contextlib.suppress(ValueError):
        ipython.events.unregister("post_run_cell", session.errors.on_post_run_cell)
    session.close()
