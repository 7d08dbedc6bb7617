"""Implementation of the IPython extension (the entry module is :mod:`saga_magic.magics`).

Modules: ``options`` (cell options, subcommands, help), ``interpolate`` (safe ``{name}``),
``display`` (streaming answer, retry line, formats), ``markdown`` (model text made safe for
trusted Markdown), ``terminal`` (rendering in a terminal IPython), ``failure`` (one-line cell
errors), ``timefmt`` (durations and times as text), ``runner`` (the background event-loop
thread), ``memory`` (conversations), ``session`` (lazy core wiring), ``cell`` (one ``%%copilot``
cell), ``commands`` and ``sandbox`` (``%copilot``).
Nothing here imports the core at module level: it loads on first use.
"""

from __future__ import annotations
