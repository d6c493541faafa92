"""Drive a terminal program as a person would: a private tmux server, read with capture-pane."""

from __future__ import annotations

import re
import subprocess
import time

STEP_RE = re.compile(r"step ([\d,]+)/[\d,]+")


class Tmux:
    """A private tmux server (its own socket), so nothing else's sessions are touched."""

    def __init__(self, tag: str) -> None:
        self.base = ["tmux", "-L", tag]

    def __call__(self, *args: str) -> str:
        return subprocess.run(self.base + list(args), capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main")

    def pane_pid(self) -> int:
        return int(self("display-message", "-p", "-t", "main", "#{pane_pid}"))

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{self.screen()}")

    def kill(self) -> None:
        subprocess.run(self.base + ["kill-server"], capture_output=True, timeout=10)


def shown_step(text: str) -> int:
    """The step count the screen's header shows (-1 when none)."""
    match = STEP_RE.search(text)
    return int(match.group(1).replace(",", "")) if match else -1
