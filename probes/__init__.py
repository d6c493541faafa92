"""Probes. `step/` runs inside the trainer (the step probe: `from scalemon.probes import
StepProbe`); `system/` polls from the monitor (host, network, GPUs)."""

from scalemon.probes.step import StepProbe

__all__ = ["StepProbe"]
