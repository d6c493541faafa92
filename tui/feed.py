"""The feed: one thread drives the collector and hands the app a new view a few times a second.

The Collector is not thread-safe, so only this thread touches it (and the
sockets, files and probes behind it). Views go to the app as `ViewUpdated`
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
from collections import deque
from collections.abc import Callable

from textual.message import Message

from scalemon.launcherlog import rank_error_lines, read_tail

from .series import LossSeries
from .view import RunInfo, ViewData, build_view, light_view, run_info

POLL_S = 0.25  # the longest the thread waits on the socket before looking around
MIN_INTERVAL_S = 0.2  # new steps reach the screen at most 5 times a second
IDLE_INTERVAL_S = 1.0  # clocks and ages refresh this often without records
FULL_INTERVAL_S = 2.0  # the slow panels (charts, medians, ETA, system): as often as nvitop
SYNC_HISTORY = 120  # steps of sync share kept for the split panel's history
STDERR_LINES = 8


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
    def __init__(self, collector, post: Callable[[Message], object], *,
                 price: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.collector = collector
        self.post = post
        self.price = price
        self.clock = clock
        self.series = LossSeries()
        self.views_posted = 0
        self._sync: deque[float] = deque(maxlen=SYNC_HISTORY)
        self._sync_step = -1
        self._stderr: tuple[str, ...] = ()
        self._stderr_status: dict | None = None
        self._info: tuple[tuple, RunInfo] | None = None
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
        fresh = True  # records (or the first view) not yet on screen
        shown = None  # what the fast panels show, as of the last view
        failed = False
        while not self._stop.is_set():
            try:
                if fresh:
                    # Too soon for another view: let records pile up in the socket and
                    # take them all at once when the next view is due (one poll, not one
                    # per datagram).
                    self._stop.wait(max(0.0, last_step_post + MIN_INTERVAL_S - time.monotonic()))
                    self.collector.poll(0)
                else:
                    wait = min(POLL_S, max(0.0, last_post + IDLE_INTERVAL_S - time.monotonic()))
                    fresh = self.collector.poll(wait) > 0
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
                    fresh = False
            except Exception:
                if not failed:  # say it once, then keep trying each second
                    self.post(FeedFailed(traceback.format_exc(limit=3).strip().splitlines()[-1]))
                failed = True
                self._stop.wait(1.0)

    def _fast_key(self) -> tuple:
        """What the fast panels (header, events) show: a view is worth posting when it moves."""
        state = self.collector.state
        return state.step, state.state(), state.event_count

    def view(self, full: bool = True) -> ViewData:
        """Build a view of the collector's state now (on the collector's thread).

        A view that is not `full` is for the fast panels only: it updates the step, state
        and events of the last full view and leaves the medians, ETA and chart as they were.
        """
        collector, state = self.collector, self.collector.state
        self.series.update(state.loss_steps, state.loss_values)
        self._follow_sync(state)
        self._read_stderr(state)
        if not full and self._full is not None:
            return light_view(state, self._full, now=self.clock(), stderr_tail=self._stderr)
        self._full = build_view(state, self.series, now=self.clock(),
                                system=collector.last_system,
                                net_bytes_per_step=collector.net_bytes_per_step(),
                                sync_history=tuple(self._sync), stderr_tail=self._stderr,
                                price=self.price, info=self._run_info(state))
        return self._full

    def _run_info(self, state) -> RunInfo:
        # Recomputed only when a rank (re)starts or the world changes.
        key = (state.world, state.depth, state.vocab, len(state.meta),
               tuple((i.rank, i.host) for i in state.ranks.values()))
        if self._info is None or self._info[0] != key:
            self._info = (key, run_info(state))
        return self._info[1]

    def _follow_sync(self, state) -> None:
        """Exposed sync share of each new step of rank 0 (RunState keeps only the last 50)."""
        records = state.recent.get(state.loss_rank, ())
        if records and records[-1].step < self._sync_step:
            self._sync.clear()  # a resume went back
            self._sync_step = -1
        for record in records:
            if record.step > self._sync_step:
                exposed = record.sync.exposed if record.sync else 0.0
                self._sync.append(exposed / record.dt if record.dt > 0 else 0.0)
                self._sync_step = record.step

    def _read_stderr(self, state) -> None:
        status = state.status
        if status is None or status is self._stderr_status or status.get("exit_code") == 0:
            return
        self._stderr_status = status
        run = getattr(self.collector, "run", None)  # a log-following collector has no run dir
        path = run.logs_dir / "stderr.log" if run is not None else \
            getattr(self.collector, "log", None)
        self._stderr = tuple(rank_error_lines(read_tail(path), STDERR_LINES)) if path else ()

