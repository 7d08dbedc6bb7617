"""The TUI's widgets and modal screens, one per module."""

from __future__ import annotations
