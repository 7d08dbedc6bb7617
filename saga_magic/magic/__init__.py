"""Implementation of the IPython extension (the entry module is :mod:`saga_magic.magics`).

Modules: ``options`` (cell options, subcommands, help), ``interpolate`` (safe ``{name}``),
``display`` (streaming answer, retry line, formats), ``failure`` (one-line cell errors),
``runner`` (the background event-loop thread), ``memory`` (conversations), ``session`` (lazy
core wiring), ``cell`` (one ``%%copilot`` cell), ``commands`` and ``sandbox`` (``%copilot``).
Nothing here imports the core at module level: it loads on first use.
"""

from __future__ import annotations
