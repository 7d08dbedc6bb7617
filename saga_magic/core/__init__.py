"""The shared core: token store, Entra ID auth manager, Copilot engine, errors, events.

No IPython, no Textual in here, ever: the magic and the TUI import the core, not the reverse.
"""

from __future__ import annotations
