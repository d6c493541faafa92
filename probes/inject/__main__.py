"""`python -m scalemon.probes.inject (-m MODULE | SCRIPT) [ARGS...]`: run a training script
with the step probe injected, as `python -m MODULE ARGS` or `python SCRIPT ARGS` would run
it (its own argv, `__main__`, sys.path), when SCALEMON_RUN_DIR names a run dir; torchrun
starts each rank of `scalemon run -- ...` this way. Without SCALEMON_RUN_DIR the script runs
untouched.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from typing import Any

from scalemon.probes.inject.driver import Driver, say
from scalemon.probes.step.probe import StepProbe

USAGE = "usage: python -m scalemon.probes.inject (-m MODULE | SCRIPT) [ARGS...]"


def _target(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(module, script, args) from the command line."""
    if argv[:1] == ["-m"]:
        if len(argv) < 2:
            raise SystemExit(USAGE)
        return argv[1], None, argv[2:]
    if not argv or argv[0].startswith("-"):
        raise SystemExit(USAGE)
    return None, argv[0], argv[1:]


def _stop_on_sigterm() -> None:
    """SIGTERM (a stop from `scalemon run`, through torchrun) ends the script as an exception,
    so its cleanup runs and the end record says stopped. A handler of its own replaces this."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def stop(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)


def _instrument(module: str | None, script: str | None, args: list[str]) -> Driver:
    shown = " ".join(["-m", module] if module else [str(script)])
    probe = StepProbe.from_env(meta={"probe": "injected", "script": shown})
    driver = Driver(probe, world=int(os.environ.get("WORLD_SIZE", "1")))
    if not probe.active:
        return driver
    patches = None
    try:
        from scalemon.probes.inject.patches import Patches

        patches = Patches(driver)
        patches.install()
    except Exception as error:  # noqa: BLE001 - the script runs, without the probe
        driver.on = False
        if patches is not None:
            patches.uninstall()
        say(f"probe not injected ({type(error).__name__}: {error}); training unmonitored")

    def retire() -> None:  # the script has a step probe of its own: it takes the rank's file
        driver.on = False
        StepProbe.on_explicit = None
        if patches is not None:
            patches.uninstall()
        probe.release()

    StepProbe.on_explicit = retire
    _stop_on_sigterm()
    return driver


def main(argv: list[str] | None = None) -> None:
    module, script, args = _target(sys.argv[1:] if argv is None else argv)
    driver = _instrument(module, script, args)
    try:
        if module is not None:
            sys.argv = [module, *args]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            assert script is not None
            sys.argv = [script, *args]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
        if code in (0, None):
            driver.finish("finished")
        elif code == 128 + signal.SIGTERM:
            driver.finish("stopped", "stopped by SIGTERM")
        else:
            driver.finish("error", f"exit code {code}" if isinstance(code, int) else str(code))
        raise
    except KeyboardInterrupt:
        driver.finish("stopped")
        raise
    except BaseException as error:
        driver.finish("error", f"{type(error).__name__}: {error}")
        raise
    driver.finish("finished")


if __name__ == "__main__":
    main()
