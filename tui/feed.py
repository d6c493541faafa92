"""The feed: one thread drives the source and hands the app a new view a few times a second.

A source is not thread-safe, so only this thread touches it (and the sockets, files and
probes behind it). Views go to the app as `ViewUpdated`
messages; one still waiting in the queue is replaced by a newer one, so a busy
screen skips views instead of falling behind.

Cadence: a new step reaches the screen within MIN_INTERVAL_S (at most 5 views a
second), but those views are light: only the header and the events take them.
Every FULL_INTERVAL_S a full view redraws the panels below (medians, chart,
ETA, system), which cost the terminal far more to repaint.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable

from textual.message import Message

from scalemon.sources.base import Source

from .view import ViewData, build_view, light_view

POLL_S = 0.25  # the longest the thread waits on the socket before looking around
MIN_INTERVAL_S = 0.2  # new steps reach the screen at most 5 times a second
IDLE_INTERVAL_S = 1.0  # clocks and ages refresh this often without records
FULL_INTERVAL_S = 2.0  # the slow panels (charts, medians, ETA, system): as often as nvitop


class ViewUpdated(Message):
    """A new picture of the run."""

    def __init__(self, view: ViewData) -> None:
        super().__init__()
        self.view = view

    def can_replace(self, message: Message) -> bool:
        """Textual asks the older message whether `message`, queued after it, may take its
        place: a newer view may, unless it is light and this one full (the slow panels
        would wait another FULL_INTERVAL_S for their update)."""
        return isinstance(message, ViewUpdated) and (message.view.full or not self.view.full)


class FeedFailed(Message):
    """Building a view raised: the screen says so instead of freezing silently."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Feed:
    def __init__(self, source: Source, post: Callable[[Message], object], *,
                 price: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.post = post
        self.price = price
        self.clock = clock
        self.views_posted = 0
        self._full: ViewData | None = None  # the last full view, which light views update
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scalemon-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to finish its current poll and exit; True once it has."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        last_post = last_step_post = last_full = -math.inf
        first = True  # the first view goes out at once, records or not
        shown = None  # what the fast panels show, as of the last view
        failed = False
        while not self._stop.is_set():
            try:
                # No view brings records sooner than MIN_INTERVAL_S after the last: until
                # then they pile up in the socket, and one poll takes them all when the
                # next is due (then or as soon as one comes). One poll a view, not two.
                self._stop.wait(max(0.0, last_step_post + MIN_INTERVAL_S - time.monotonic()))
                wait = min(POLL_S, max(0.0, last_post + IDLE_INTERVAL_S - time.monotonic()))
                fresh = self.source.poll(wait) > 0 or first
                now = time.monotonic()
                full = now - last_full >= FULL_INTERVAL_S
                if fresh and not full and self._fast_key() == shown:
                    fresh = False  # e.g. another rank's step: it rides with the next full view
                # The interval spaces views that bring records; a view that only moves the
                # clocks (once a second) never holds back the next step.
                due = now - last_step_post >= MIN_INTERVAL_S if fresh else \
                    now - last_post >= IDLE_INTERVAL_S
                if due:
                    self.post(ViewUpdated(self.view(full=full)))
                    self.views_posted += 1
                    last_post, shown, failed = now, self._fast_key(), False
                    last_step_post = now if fresh else last_step_post
                    last_full = now if full else last_full
                    first = False
            except Exception:
                if not failed:  # say it once, then keep trying each second
                    self.post(FeedFailed(traceback.format_exc(limit=3).strip().splitlines()[-1]))
                failed = True
                self._stop.wait(1.0)

    def _fast_key(self) -> tuple[object, ...]:
        """What the fast panels (header, events) show: a view is worth posting when it moves."""
        return self.source.fast_key()

    def view(self, full: bool = True) -> ViewData:
        """Build a view of the source's state now (on the source's thread).

        A view that is not `full` is for the fast panels only: it refreshes the step, phase
        and events of the last full view and leaves the medians, ETA and chart as they were.
        """
        now = self.clock()
        if not full and self._full is not None:
            return light_view(self._full, self.source.refresh(self._full.summary, now))
        self._full = build_view(self.source.summary(now), self.price)
        return self._full
