"""Time formats of the wire: HTTP-dates and the UTC stamps in Entra's error texts."""

from __future__ import annotations

import email.utils
import math
import time
from typing import Final

__all__ = ["ENTRA_STAMP", "ISO_SECONDS", "US_STAMP", "http_date", "utc"]

ENTRA_STAMP: Final = "%Y-%m-%d %H:%M:%SZ"
"""``timestamp`` of an Entra error body (``2024-05-01 12:00:00Z``)."""
ISO_SECONDS: Final = "%Y-%m-%dT%H:%M:%SZ"
"""ISO 8601 to the second (``2024-05-01T12:00:00Z``)."""
US_STAMP: Final = "%m/%d/%Y %H:%M:%S"
"""Month-first stamp of some AADSTS texts (``05/01/2024 12:00:00``)."""


def utc(when: float, fmt: str) -> str:
    """Return a UTC time (seconds since the epoch) in a ``strftime`` format."""
    return time.strftime(fmt, time.gmtime(when))


def http_date(when: float) -> str:
    """Return the HTTP-date of a time, rounded up to the next second.

    An HTTP-date has no fraction; rounding down could put a ``Retry-After`` date in the past.
    """
    return email.utils.formatdate(math.ceil(when), usegmt=True)
