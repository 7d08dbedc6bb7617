"""The Tokens panel: one row per stored user, with a live countdown to expiry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError
from textual.widgets import DataTable

from saga_magic.core.types import TokenInfo, TokenStatus

from ..timefmt import format_ago, format_countdown

if TYPE_CHECKING:
    from ..timefmt import Clock

__all__ = ["TokensPanel", "short_scope", "short_scopes"]

_STATUS_VARIABLE: dict[TokenStatus, str] = {
    TokenStatus.VALID: "text-success",
    TokenStatus.EXPIRING: "text-warning",
    TokenStatus.EXPIRED: "text-error",
    TokenStatus.RELOGIN: "text-error",
}

_COLUMNS = (("user", "User"), ("status", "Status"), ("expires", "Expires"))
_MORE_COLUMNS = (("refreshed", "Refreshed"), ("scopes", "Scopes"))
_STANDARD_SCOPES = frozenset({"offline_access", "openid", "profile", "email"})
"""OpenID Connect scopes every sign-in asks for: not worth a column's width."""


def short_scope(scope: str) -> str:
    """Shorten a scope for display (drop ``https://`` and ``.azure.com``).

    Args:
        scope: A scope such as ``https://cognitiveservices.azure.com/.default``.

    Returns:
        The shorter text, e.g. ``cognitiveservices/.default``.
    """
    host, _, path = scope.removeprefix("https://").partition("/")
    return f"{host.removesuffix('.azure.com')}/{path}" if path else host


def short_scopes(scopes: Iterable[str], *, limit: int = 28) -> str:
    """Shorten a token's scopes for the table: no standard OIDC scopes, cut with an ellipsis.

    Args:
        scopes: The granted scopes.
        limit: Most characters shown.

    Returns:
        E.g. ``cognitiveservices/.default`` (``-`` when nothing is left).
    """
    text = " ".join(short_scope(scope) for scope in scopes if scope not in _STANDARD_SCOPES)
    if not text:
        return "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TokensPanel(DataTable[str | Text]):
    """Stored users and the state of their tokens (clear metadata only: no key needed).

    The configured user always has a row, marked *not signed in* when the store has no token for
    them, so ``l`` on that row signs them in.

    Args:
        clock: Returns the current unix time.
        primary_user: The configured user (``--user``), listed even without a stored token.
        buffer_seconds: How long before expiry a token counts as expiring.
        id: The widget id.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        primary_user: str | None = None,
        buffer_seconds: float = 300.0,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._clock = clock
        self._buffer = buffer_seconds
        self.primary_user = primary_user
        self._infos: dict[str, TokenInfo] = {}
        self._rows: list[str] = []
        self._loaded = False
        self.error = ""
        """Why the last read of the store failed (empty when it worked)."""
        self.border_title = "Tokens"

    def on_mount(self) -> None:
        """Create the columns, list the configured user and follow theme changes."""
        for key, label in (*_COLUMNS, *_MORE_COLUMNS):
            self.add_column(label, key=key)
        self.show_infos([], initial=True)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.tick())

    @property
    def loaded(self) -> bool:
        """The store was read at least once (so a missing row means: no stored token)."""
        return self._loaded and not self.error

    @property
    def selected_user(self) -> str | None:
        """The user under the cursor, or ``None`` when the table is empty."""
        if self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def status_of(self, user_id: str) -> TokenStatus | None:
        """Return a user's token status at the current time.

        Args:
            user_id: The user.

        Returns:
            The status, or ``None`` when the user has no stored token.
        """
        info = self._infos.get(user_id)
        if info is None:
            return None
        return info.status(now=self._clock(), buffer_seconds=self._buffer)

    def show_infos(self, infos: Iterable[TokenInfo], *, initial: bool = False) -> None:
        """Replace the rows with a fresh read of the store, keeping the cursor on its user.

        When that user is gone (logged out elsewhere), the cursor goes to the configured user,
        else to the row now in the same place.

        Args:
            infos: One entry per stored user.
            initial: The placeholder listing before the first read (the cursor is not moved).
        """
        selected = self.selected_user
        position = self.cursor_row
        fresh = {info.user_id: info for info in sorted(infos, key=lambda item: item.user_id)}
        rows = sorted(set(fresh) | ({self.primary_user} if self.primary_user else set()))
        if rows != self._rows:
            self.clear()
            self._infos = fresh
            for user_id in rows:
                self.add_row(*self._cells(user_id), key=user_id)
            if (not self._loaded or selected not in rows) and self.primary_user in rows:
                selected = self.primary_user
            if selected in rows:
                self.move_cursor(row=rows.index(selected), animate=False)
            elif rows:
                self.move_cursor(row=min(max(position, 0), len(rows) - 1), animate=False)
            self._rows = rows
        self._infos = fresh
        self._loaded = self._loaded or not initial
        if not initial:
            self.error = ""
        self.tick()
        self._update_subtitle()

    def show_error(self, error: str) -> None:
        """Say that the store cannot be read (the rows keep the last good read).

        Args:
            error: What went wrong, in one line.
        """
        self.error = error
        self._update_subtitle()

    def on_resize(self) -> None:
        """Keep the highlighted user in sight when the panel gets shorter."""
        if self.row_count:
            self.move_cursor(row=self.cursor_row, animate=False)

    def on_data_table_row_highlighted(self) -> None:
        """Name the user the token actions now apply to."""
        self._update_subtitle()

    def tick(self) -> None:
        """Refresh the time-dependent cells (status, countdown, last refresh)."""
        for user_id in self._rows:
            status, expires, refreshed, scopes = self._cells(user_id)[1:]
            self.update_cell(user_id, "status", status, update_width=True)
            self.update_cell(user_id, "expires", expires, update_width=True)
            self.update_cell(user_id, "refreshed", refreshed, update_width=True)
            self.update_cell(user_id, "scopes", scopes, update_width=True)

    def _cells(self, user_id: str) -> tuple[str, Text, str, str, str]:
        info = self._infos.get(user_id)
        if info is None:
            return (user_id, Text("not signed in", style="dim italic"), "-", "never", "-")
        now = self._clock()
        status = info.status(now=now, buffer_seconds=self._buffer)
        status_text = Text(str(status), style=self._theme_style(_STATUS_VARIABLE[status]))
        return (
            user_id,
            status_text,
            format_countdown(info.expires_at, now),
            format_ago(info.updated_at, now),
            short_scopes(info.scopes),
        )

    def _theme_style(self, variable: str) -> Style:
        """Bold text in a theme colour (``ansi_*`` names included), plain bold if unparseable."""
        try:
            color = Color.parse(self.app.theme_variables.get(variable, "")).rich_color
        except ColorParseError:
            return Style(bold=True)
        return Style(color=color, bold=True)

    def _update_subtitle(self) -> None:
        if self.error:
            self.border_subtitle = f"store unreadable: {self.error}"
        elif not self._loaded:
            self.border_subtitle = "reading the token store…"
        elif not self._infos:
            self.border_subtitle = "no stored tokens · l logs in"
        else:
            target = self.selected_user or self.primary_user or "-"
            self.border_subtitle = f"{target}: r refresh · l log in · o log out"
