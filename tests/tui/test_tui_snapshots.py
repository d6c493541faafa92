"""SVG snapshots of the screen with frozen data, at 80x24 and 160x48.

Each snapshot is stored twice under tests/tui/snapshots/: the SVG (colours and
layout, what a reviewer opens) and its plain text (what a diff shows). After an
intended change, refresh them with:

    SCALEMON_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/tui/test_tui_snapshots.py

The SVG depends on Textual's rendering details, so it is compared only under the
Textual version it was recorded with (textual-version.txt); the text always is.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from support.fakes import T0, frozen_state, frozen_view, screen_text, system_snapshot

from scalemon.core.config import RunStatus
from scalemon.core.records import EndRecord
from scalemon.state.observations import StatusSeen
from scalemon.tui.app import ScalemonApp

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("SCALEMON_UPDATE_SNAPSHOTS") == "1"
VERSION_FILE = SNAPSHOTS / "textual-version.txt"


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch, request):
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.delenv("NO_COLOR", raising=False)
    if request.node.callspec.params.get("name", "").endswith("nocolor"):
        monkeypatch.setenv("NO_COLOR", "1")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def failed_view():
    state = frozen_state()
    state.apply(EndRecord(rank=0, t=T0 + 63, reason="error", step=119,
                          message="RuntimeError: CUDA out of memory"))
    state.apply(StatusSeen(RunStatus(exit_code=1, reason="error", ended=T0 + 64)))
    return frozen_view(state, stderr_tail=("  File \"train.py\", line 212, in run",
                                           "RuntimeError: CUDA out of memory"))


def cuda_view():
    return frozen_view(frozen_state(60, cuda=True), system=system_snapshot(gpus=True))


CASES = {
    "training-80x24": (frozen_view, (80, 24)),
    "training-160x48": (frozen_view, (160, 48)),
    "failed-100x30": (failed_view, (100, 30)),
    "cuda-120x36": (cuda_view, (120, 36)),
    "training-80x24-nocolor": (frozen_view, (80, 24)),
}


textual_version = version("textual")


def shoot(make_view, size) -> tuple[str, str]:
    app = ScalemonApp(view=make_view(), quit_hint="scalemon attach frozen-d4")
    result = {}

    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            result["svg"] = app.export_screenshot(title="scalemon")
            result["text"] = screen_text(app)
    asyncio.run(main())
    return result["svg"], result["text"]


@pytest.mark.parametrize("name", CASES)
def test_screen_matches_snapshot(name, tmp_path):
    make_view, size = CASES[name]
    svg, text = shoot(make_view, size)
    svg_path, text_path = SNAPSHOTS / f"{name}.svg", SNAPSHOTS / f"{name}.txt"
    if UPDATE or not svg_path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        svg_path.write_text(svg)
        text_path.write_text(text)
        VERSION_FILE.write_text(textual_version + "\n")
        if not UPDATE:
            pytest.fail(f"new snapshot {svg_path.name} written; check it and run again")
        return
    if text != text_path.read_text():
        diff = "\n".join(difflib.unified_diff(text_path.read_text().splitlines(),
                                              text.splitlines(), "snapshot", "now",
                                              lineterm=""))
        (tmp_path / f"{name}.svg").write_text(svg)
        pytest.fail(f"{name}: the screen's text changed (new SVG in {tmp_path}):\n{diff}")
    if textual_version == VERSION_FILE.read_text().strip() and svg != svg_path.read_text():
        (tmp_path / f"{name}.svg").write_text(svg)
        pytest.fail(f"{name}: same text, different colours or styles; compare "
                    f"{svg_path} with {tmp_path / (name + '.svg')}")
