"""``saga-tui``: a full-screen terminal UI over the ARC SAGA core.

Shows every stored user's token state, the retries in flight and the live event log (of this
process or, through the SQLite journal, of any other), and lets the user refresh, log in, log out
and send prompts. Run ``saga-tui --sandbox`` to see it move without an Azure tenant.
"""

from __future__ import annotations

from .app import SagaApp

__all__ = ["SagaApp"]
