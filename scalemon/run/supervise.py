"""The supervisor: runs torch.distributed's launcher for one run dir and records how it ended.

Started by `scalemon run` in a session of its own (`python -m scalemon.run.supervise
RUN_DIR`), so nothing that happens to the monitor or its terminal reaches the
ranks. SIGTERM or SIGINT asks for a graceful stop: the ranks get SIGTERM, save a
checkpoint and exit; the launcher is only signalled if they do not. In a
multi-node run it also runs the relay (`scalemon.run.relay`), which lives as long
as the run, unlike a monitor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from scalemon.core import layout
from scalemon.core.config import STOPPED_ON_REQUEST
from scalemon.core.errors import RunDirError
from scalemon.core.launcherlog import first_failure
from scalemon.io.rundir import RunDir
from scalemon.io.tail import read_tail
from scalemon.run.launch import launcher_command, launcher_env
from scalemon.run.relay import start_relay

GRACE_S = 60.0  # ranks get this long to checkpoint before the launcher is told to stop
KILL_S = 30.0  # then the launcher gets this long before everything is killed


class Supervisor:
    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.config = run.read_config()
        self.proc: subprocess.Popen | None = None
        self.stop_requested_at: float | None = None
        self.escalated = 0

    def _on_stop(self, signum, frame) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            self._signal_workers(signal.SIGTERM)

    def _workers(self) -> list[psutil.Process]:
        if self.proc is None:  # not started yet
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except (psutil.Error, AttributeError):
            return []

    def _signal_workers(self, sig: int) -> None:
        workers = self._workers()
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.send_signal(sig)
        if not workers and self.proc is not None:
            self.proc.send_signal(sig)

    def _escalate(self) -> None:
        """Ranks that ignore a stop request: first the launcher, then everything."""
        # Called from run_launcher's wait loop: the launcher runs and a stop was asked for.
        assert self.proc is not None and self.stop_requested_at is not None
        waited = time.monotonic() - self.stop_requested_at
        if self.escalated == 0 and waited > GRACE_S:
            self.escalated = 1
            self.proc.send_signal(signal.SIGTERM)
        elif self.escalated == 1 and waited > GRACE_S + KILL_S:
            self.escalated = 2
            for process in [*self._workers(), psutil.Process(self.proc.pid)]:
                with contextlib.suppress(psutil.Error):
                    process.kill()

    def run_launcher(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        logs = self.run.logs_dir
        # Across machines: node 0 listens for the other nodes' records, they send theirs.
        relay = start_relay(self.run, self.config)
        with open(logs / layout.STDOUT_LOG, "ab") as out, \
                open(logs / layout.STDERR_LOG, "ab") as err:
            self.proc = subprocess.Popen(
                launcher_command(self.config, self.run), env=launcher_env(self.config, self.run),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.config.launch.cwd,
            )
        self._record_launcher_pid()
        while True:
            try:
                code = self.proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if self.stop_requested_at is not None:
                    self._escalate()
        if code != 0:  # the failing rank's own code, from the launcher's failure summary
            failure = first_failure(read_tail(self.run.stderr_log))
            code = failure.exit_code if failure and failure.exit_code else code
        if relay is not None:
            relay.finish()  # the other nodes' last records, before the run is marked ended
        if self.stop_requested_at is not None:
            reason = STOPPED_ON_REQUEST
        else:
            reason = "finished" if code == 0 else "launcher or a rank failed"
        self.run.write_status(code, reason)
        return code

    def _record_launcher_pid(self) -> None:
        assert self.proc is not None  # called just after the launcher started
        try:
            config = self.run.read_config()
            self.run.write_config(config.with_pids(supervisor=os.getpid(),
                                                   launcher=self.proc.pid))
        except RunDirError as error:
            print(f"scalemon supervise: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scalemon.run.supervise RUN_DIR", file=sys.stderr)
        return 2
    try:
        supervisor = Supervisor(RunDir(Path(args[0])))
        return supervisor.run_launcher()
    except (RunDirError, OSError) as error:
        print(f"scalemon supervise: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
