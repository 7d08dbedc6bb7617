"""The Retries panel: one row per operation in flight, with a bar counting down to its next try."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.clock import Clock as TextualClock
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

from ..retries import UNKNOWN, RetryState, RetryTracker
from ..timefmt import format_duration

if TYPE_CHECKING:
    from collections.abc import Iterable

    from saga_magic.core.events import Event

    from ..timefmt import Clock

__all__ = ["RetriesPanel", "RetryRow", "describe_retry", "describe_wait"]

_STEPS = 1000.0


_OUTCOMES = {"succeeded": "succeeded", "failed": "failed", UNKNOWN: "no news (stale)"}


def describe_retry(state: RetryState) -> str:
    """Say in one line where an operation stands, most useful first (narrow panels cut the end).

    Args:
        state: The operation.

    Returns:
        E.g. ``"429 · attempt 2/6 · chat request · alice"`` or
        ``"succeeded · attempt 3/6 · chat request · alice"``.
    """
    where = state.reason if state.outcome is None else _OUTCOMES.get(state.outcome, state.outcome)
    return (
        f"{where} · attempt {state.attempt}/{state.max_attempts} · {state.kind} · "
        f"{state.user_id or '-'}"
    )


def describe_wait(state: RetryState, now: float) -> str:
    """Say how long until the next attempt.

    Args:
        state: The operation.
        now: The current unix time.

    Returns:
        ``"4.0s"``, ``"2m 00s"``, ``"now"``, ``"done"`` or ``"stale"``.
    """
    if state.outcome is not None:
        return "stale" if state.outcome == UNKNOWN else "done"
    left = state.remaining(now)
    if left <= 0:
        return "now"
    return f"{left:.1f}s" if left < 60 else format_duration(left)


class RetryRow(Vertical):
    """One operation: a description and a progress bar filling up until the next attempt.

    Args:
        state: The operation's state.
        clock: Returns the current unix time.
    """

    def __init__(self, state: RetryState, *, clock: Clock) -> None:
        super().__init__(classes="retry-row")
        self.state = state
        self._clock = clock
        self._label = Label(describe_retry(state), classes="retry-label")
        self._wait = Label(describe_wait(state, clock()), classes="retry-wait")
        self._bar = ProgressBar(
            total=_STEPS,
            show_eta=False,
            show_percentage=False,
            clock=TextualClock(get_time=clock),
        )

    def compose(self) -> ComposeResult:
        """Lay out the label and the bar."""
        yield self._label
        with Horizontal(classes="retry-progress"):
            yield self._bar
            yield self._wait

    def on_mount(self) -> None:
        """Draw the current state."""
        self.refresh_state()

    @property
    def text(self) -> str:
        """The description and the wait shown."""
        return f"{self._label.render()} · {self._wait.render()}"

    @property
    def fraction(self) -> float:
        """How full the bar is (0 to 1)."""
        return self._bar.percentage or 0.0

    def refresh_state(self) -> None:
        """Redraw the text and the bar from the state and the clock."""
        now = self._clock()
        self._label.update(describe_retry(self.state))
        self._wait.update(describe_wait(self.state, now))
        self._bar.update(progress=self.state.elapsed_fraction(now) * _STEPS)
        self.set_class(self.state.outcome == "succeeded", "-succeeded")
        self.set_class(self.state.outcome == "failed", "-failed")
        self.set_class(self.state.outcome == UNKNOWN, "-stale")


class RetriesPanel(VerticalScroll):
    """Operations that are retrying, driven by ``*_retry`` and terminal events.

    Focusable, so the arrow keys scroll it when many operations are listed.

    Args:
        clock: Returns the current unix time.
        linger: Seconds a finished operation stays listed.
        grace: Seconds past its next attempt a silent operation stays in flight.
        id: The widget id.
    """

    def __init__(
        self, *, clock: Clock, linger: float = 10.0, grace: float = 90.0, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._clock = clock
        self.tracker = RetryTracker(linger=linger, grace=grace)
        self.border_title = "Retries"

    def compose(self) -> ComposeResult:
        """Start with the empty-state placeholder."""
        yield Static("no retries in flight", id="retries-empty")

    @property
    def rows(self) -> dict[str, RetryRow]:
        """The shown rows by op id."""
        return {row.state.op_id: row for row in self.query(RetryRow)}

    def add_events(self, events: Iterable[Event]) -> None:
        """Fold a batch of events in and redraw.

        Args:
            events: New events, oldest first.
        """
        if self.tracker.apply(events):
            self._sync()

    def discard_own(self, *, pid: int, kind: str, since: float, user_id: str | None) -> None:
        """Drop this process's in-flight operations of a cancelled call (no event will end them).

        Args:
            pid: The process id.
            kind: The kind of operation.
            since: Unix time the call started.
            user_id: Whose call it was.
        """
        if self.tracker.discard(pid=pid, kind=kind, since=since, user_id=user_id):
            self._sync()

    def tick(self) -> None:
        """Advance the bars, mark silent operations stale and drop those past their linger."""
        if self.tracker.prune(self._clock()):
            self._sync()
            return
        for row in self.query(RetryRow):
            row.refresh_state()

    def _sync(self) -> None:
        states = {state.op_id: state for state in self.tracker.states}
        rows = self.rows
        for op_id, row in rows.items():
            if op_id not in states:
                row.remove()
        for op_id, state in states.items():
            existing = rows.get(op_id)
            if existing is None:
                self.mount(RetryRow(state, clock=self._clock))
            else:
                existing.state = state
                existing.refresh_state()
        in_flight = sum(1 for state in states.values() if state.outcome is None)
        self.query_one("#retries-empty").display = not states
        self.border_subtitle = f"{in_flight} in flight" if states else ""
