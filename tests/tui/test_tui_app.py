"""The screen under Textual's Pilot: each panel's content, the feed thread, and the keys."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from support.fakes import (
    T0,
    FakeSource,
    finished_state,
    frozen_state,
    frozen_view,
    header_text,
    panel_text,
    screen_text,
    step_record,
    system_snapshot,
)
from textual.message import Message

from scalemon.core.config import RunStatus
from scalemon.core.records import StepRecord
from scalemon.state.observations import StatusSeen, Tick
from scalemon.tui.app import ScalemonApp
from scalemon.tui.feed import Feed, FeedFailed, ViewUpdated
from scalemon.tui.screens import ConfirmStop, HelpScreen


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run(app, body, size=(120, 40)):
    """Run `body(pilot)` against the app and return the app's return value."""
    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await body(pilot)
    asyncio.run(main())
    return app.return_value


async def until(pilot, condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


# --- panels ----------------------------------------------------------------------------

def test_header_says_what_the_run_is_and_how_far_it_got():
    async def body(pilot):
        text = header_text(pilot.app)
        for part in ("frozen-d4", "d4", "36.7M params (91% emb)", "vocab 65,536",
                     "2 ranks on node-a", "gloo/cpu", "TRAINING", "step 120/1,000", "12.0%"):
            assert part in text, part
        assert "█" in text  # the progress bar
    run(ScalemonApp(view=frozen_view()), body)


def test_split_panel_shows_the_median_step_sync_straggler_and_regime():
    async def body(pilot):
        text = panel_text(pilot.app, "#split")
        assert "compute-bound" in text
        for label in ("fwd", "bwd", "sync", "opt", "data", "other"):
            assert label in text
        assert "120 ms" in text and "200 ms" in text  # forward, backward compute
        assert "sync 54 ms: 34 ms after backward + 20 ms slowing it" in text
        assert "comm 120 ms · 147 MB/step at" in text and "73.4 MB sent" in text
        assert "rank 1 slowest: peers wait 32 ms (7%)" in text
        assert "model: 1.2 s to all-reduce 147 MB in a ring of 2 over 1 Gbit/s (NIC)" in \
            " ".join(text.split())  # the ring model beside the measurement, wrapped
        assert "sync share ▂▂▂" in text and "10% (max 10%)" in text  # steady 10%, scale 50%
        assert "median of" in pilot.app.query_one("#split").border_title
    run(ScalemonApp(view=frozen_view()), body)


def test_split_panel_names_the_accumulation_that_fixes_a_sync_bound_run():
    state = frozen_state(0)
    for step in range(40):
        for rank in (0, 1):
            state.apply(step_record(rank, step, exposed=0.3))

    async def body(pilot):
        text = " ".join(panel_text(pilot.app, "#split").split())  # the advice wraps
        # The numbers are the fold's (tests/unit/test_fold.py); the screen must carry them.
        assert "sync-bound: sync is 62% of a step;" in text and "micro-steps" in text
    run(ScalemonApp(view=frozen_view(state)), body)


def test_loss_panel_draws_the_curve_with_labelled_baselines():
    async def body(pilot):
        text = panel_text(pilot.app, "#loss")
        assert "loss 5.387 · smoothed 5.410 · 5.70 nats below ln V" in text
        assert "ln V 11.09" in text and "unigram H 7.25" in text and "entropy rate 4.50" in text
        assert any("\u2800" < ch <= "\u28ff" for ch in text)  # braille dots
        assert text.splitlines()[-1].split() == ["1", "120"]  # the x-axis: steps 1 to 120
        assert "all steps" in pilot.app.query_one("#loss").border_title
    run(ScalemonApp(view=frozen_view()), body, size=(160, 48))


def test_loss_panel_uses_short_baseline_names_when_narrow():
    async def body(pilot):
        text = panel_text(pilot.app, "#loss")
        assert "lnV 11.09" in text and "H1 7.25" in text and "Hr 4.50" in text
    run(ScalemonApp(view=frozen_view()), body, size=(80, 24))


def test_eta_panel_gives_time_clock_speed_and_what_if_rows():
    async def body(pilot):
        text = panel_text(pilot.app, "#eta")
        assert "ETA 7 min\n" in text  # steady steps: no band around it
        assert "finishes today 11:15 · 880 steps left" in text
        assert "2.05k tok/s" in text and "500 ms/step" in text
        assert "MFU N/A (CPU run)" in text
        assert "what if, the rest at 40% MFU, $2.00/h" in text
        assert "here" in text and "1x H100 SXM" in text and "1x RTX 4090" in text
        assert "$0.00" in text
    run(ScalemonApp(view=frozen_view()), body)


def test_eta_panel_shows_mfu_against_the_gpu_peak_for_a_cuda_run():
    view = frozen_view(frozen_state(cuda=True), system=system_snapshot(gpus=True))
    # 1,048,576 tokens / 0.5 s x 125.8 MFLOP/token (d4, T=512) over 2 x 989.4 TFLOP/s
    assert view.mfu.value == pytest.approx(2_097_152 * 125_829_120 / (2 * 989.4e12), rel=1e-3)

    async def body(pilot):
        assert "MFU 13.3% of 2x H100 SXM bf16" in panel_text(pilot.app, "#eta")
        assert "gpu0 97% 61.0 GB/80.0 GB 612 W 64°C NVIDIA H100" in \
            panel_text(pilot.app, "#system")
    run(ScalemonApp(view=view), body)


def test_system_panel_shows_cores_ranks_memory_network_and_gpus():
    async def body(pilot):
        text = panel_text(pilot.app, "#system")
        assert "cpu 96% of 2 cores · load 2.10" in text
        assert "r0 97% 1.20 GB" in text and "r1 96% 1.10 GB" in text
        assert "mem 2.80 GB of 25.3 GB (11%)" in text
        assert "eth0 ↓188 Mbit/s ↑193 Mbit/s · 73.4 MB/step sent" in text
        assert "no GPU (nvidia: NVML Shared Library Not Found)" in text
    run(ScalemonApp(view=frozen_view()), body)


def test_events_panel_lists_checkpoints_and_the_trainers_last_words(tmp_path):
    state = finished_state()
    state.apply(StatusSeen(RunStatus(exit_code=3, reason="error", ended=T0 + 100)))
    (tmp_path / "stderr.log").write_text("Traceback (most recent call last):\n"
                                         "RuntimeError: boom\n")
    source = FakeSource(state, stderr_log=tmp_path / "stderr.log")
    source.poll(0)  # the source reads the trainer's stderr once it sees the failed status
    view = Feed(source, lambda message: None, price=None).view()
    assert view.summary.stderr_tail == ("Traceback (most recent call last):",
                                        "RuntimeError: boom")

    async def body(pilot):
        text = panel_text(pilot.app, "#events")
        assert "checkpoint at step 99" in text
        assert "trainer exited with code 3" in text
        assert "RuntimeError: boom" in text
        assert header_text(pilot.app).splitlines()[0].rstrip().endswith("FAILED")
    run(ScalemonApp(view=view), body, size=(120, 48))


def test_a_nan_loss_and_a_silent_rank_are_called_out():
    state = frozen_state()
    for rank in (0, 1):
        state.apply(step_record(rank, 120, loss=math.nan))
    state.apply(Tick(T0 + 200))  # long after the last step: both ranks have gone quiet

    async def body(pilot):
        assert "loss nan" in panel_text(pilot.app, "#loss")
        events = panel_text(pilot.app, "#events")
        assert "loss is nan at step 120" in events
        assert "has not reported a step for" in events
        assert "STALLED" in header_text(pilot.app)
    run(ScalemonApp(view=frozen_view(state, now=T0 + 200)), body, size=(120, 48))


def test_feed_failure_is_shown_not_swallowed():
    async def body(pilot):
        pilot.app.post_message(FeedFailed("ZeroDivisionError: division by zero"))
        await pilot.pause()
        assert any("ZeroDivisionError" in str(n.message) for n in pilot.app._notifications)
    run(ScalemonApp(view=frozen_view()), body)


# --- the feed thread -------------------------------------------------------------------

def test_feed_thread_drives_the_source_and_the_screen_follows():
    source = FakeSource()
    app = ScalemonApp(source, price=None)

    async def body(pilot):
        await until(pilot, lambda: "step 120/1,000" in header_text(pilot.app))
        for step in range(120, 125):
            source.queued.extend([step_record(0, step), step_record(1, step)])
        await until(pilot, lambda: "step 125/1,000" in header_text(pilot.app))
        assert threading.get_ident() not in source.poll_threads
        assert len(source.poll_threads) == 1  # one thread, always the same
    run(app, body)
    assert app.feed is not None and not app.feed._thread.is_alive()  # stopped on exit


def test_feed_coalesces_a_firehose_to_a_few_views_a_second():
    source = FakeSource()
    source.firehose = True
    posted: list[Message] = []
    feed = Feed(source, posted.append)
    feed.start()
    time.sleep(1.9)
    assert feed.stop()
    views = [m for m in posted if isinstance(m, ViewUpdated)]
    assert 5 <= len(views) <= 1 + 1.9 / 0.2  # at most 5 a second, however many records come
    full = [m for m in views if m.view.full]
    light = [m for m in views if not m.view.full]
    assert len(full) == 1 and light  # the slow panels' view once in 2 s, light ones between
    # A queued view gives way to a newer one, but a light one never displaces a full one.
    assert light[0].can_replace(light[1]) and light[0].can_replace(full[0])
    assert not full[0].can_replace(light[0]) and not light[0].can_replace(Message())


def test_feed_posts_a_view_each_second_without_records():
    posted: list[Message] = []
    feed = Feed(FakeSource(), posted.append)
    feed.start()
    time.sleep(2.2)
    feed.stop()
    assert 2 <= len(posted) <= 4  # the first view, then one a second for clocks and ages


# --- keys ------------------------------------------------------------------------------

def test_q_leaves_the_run_going():
    async def body(pilot):
        await pilot.press("q")
    assert run(ScalemonApp(view=frozen_view(), quit_hint="attach with ..."), body) == "quit"


def test_q_after_the_run_ended_returns_its_final_state():
    async def body(pilot):
        await pilot.press("q")
    assert run(ScalemonApp(view=frozen_view(finished_state())), body) == "finished"


def test_s_stops_only_after_confirmation():
    calls = []

    def stop_run():
        calls.append(1)
        return True

    async def body(pilot):
        await pilot.press("s")
        assert isinstance(pilot.app.screen, ConfirmStop)
        await pilot.press("n")
        assert not isinstance(pilot.app.screen, ConfirmStop) and calls == []
        await pilot.press("s")
        await pilot.press("y")
        await pilot.pause()
        assert calls == [1]
        assert any("stop requested" in str(n.message) for n in pilot.app._notifications)
    run(ScalemonApp(view=frozen_view(), stop_run=stop_run), body)


def test_s_on_an_ended_run_does_not_ask():
    async def body(pilot):
        await pilot.press("s")
        assert not isinstance(pilot.app.screen, ConfirmStop)
    run(ScalemonApp(view=frozen_view(finished_state()), stop_run=lambda: True), body)


def test_p_pauses_screen_updates_and_resumes_with_the_latest():
    state = frozen_state()
    later = frozen_state(130)

    async def body(pilot):
        app = pilot.app
        await pilot.press("p")
        assert "PAUSED" in header_text(app)
        app.post_message(ViewUpdated(frozen_view(later)))
        await pilot.pause()
        assert "step 120/1,000" in header_text(app)
        await pilot.press("p")
        assert "step 130/1,000" in header_text(app)
        assert "PAUSED" not in header_text(app)
    run(ScalemonApp(view=frozen_view(state)), body)


def test_x_cycles_the_loss_x_axis():
    async def body(pilot):
        titles = []
        for _ in range(3):
            await pilot.press("x")
            titles.append(pilot.app.query_one("#loss").border_title)
        assert [t.split("·")[1].split("steps")[0].strip() for t in titles] == \
            ["last 1,000", "last 100", "all"]
        await pilot.press("x", "x")  # last 100: the x-axis starts at step 21
        assert panel_text(pilot.app, "#loss").splitlines()[-1].split()[0] == "21"
    run(ScalemonApp(view=frozen_view()), body)


def test_digits_focus_a_panel_full_screen_and_escape_restores():
    async def body(pilot):
        app = pilot.app
        await pilot.press("2")
        assert app.screen.maximized is app.query_one("#loss")
        await pilot.press("escape")
        assert app.screen.maximized is None
        await pilot.press("tab", "f")  # focus moves on from the loss panel
        assert app.screen.maximized is app.query_one("#eta")
        await pilot.press("f")
        assert app.screen.maximized is None
    run(ScalemonApp(view=frozen_view()), body)


def test_question_mark_shows_help_with_the_attach_hint():
    async def body(pilot):
        await pilot.press("question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        assert "scalemon attach frozen-d4" in screen_text(pilot.app)
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, HelpScreen)
    run(ScalemonApp(view=frozen_view(), quit_hint="scalemon attach frozen-d4"), body)


# --- sizes and colours -----------------------------------------------------------------

@pytest.mark.parametrize("size", [(80, 24), (60, 20), (40, 12), (20, 6)])
def test_small_terminals_still_show_step_and_loss_first(size):
    async def body(pilot):
        text = screen_text(pilot.app)
        assert "frozen-d4"[: size[0] - 16] in text
        if size[1] >= 12:
            assert "step 120" in text
        if size == (80, 24):
            assert "loss 5.387" in text and "ETA 7 min" in text and "q quit" in text
    run(ScalemonApp(view=frozen_view()), body, size=size)


def test_no_color_draws_the_split_with_letters(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def body(pilot):
        assert pilot.app.no_color
        bar = panel_text(pilot.app, "#split").splitlines()[0]
        assert "f" in bar and "b" in bar and "s" in bar and "█" not in bar
    run(ScalemonApp(view=frozen_view()), body)


def test_records_are_never_touched_by_widgets():
    """The app and its panels hold views only: no source, socket or probe attributes."""
    app = ScalemonApp(view=frozen_view())

    async def body(pilot):
        for panel in pilot.app.query("Panel"):
            assert not any(isinstance(v, (StepRecord, FakeSource)) for v in vars(panel).values())
    run(app, body)
