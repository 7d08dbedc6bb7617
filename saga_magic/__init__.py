"""ARC SAGA for notebooks and terminals: ask your company's Copilot from Jupyter and the terminal.

``%load_ext saga_magic`` registers the ``%%copilot`` cell magic and the ``%copilot`` line magic.
The shared core lives in :mod:`saga_magic.core`; the local emulator in :mod:`saga_magic.sandbox`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics with IPython (called by ``%load_ext saga_magic``).

    Args:
        ipython: The running ``InteractiveShell``.
    """
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Stop background work and unregister (called by ``%unload_ext saga_magic``).

    Args:
        ipython: The running ``InteractiveShell``.
    """
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
