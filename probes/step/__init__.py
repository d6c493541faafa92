"""What runs inside the trainer: the step probe, which times each step's phases and gradient
sync and writes the records (torch is imported only when a DDP model is attached)."""

from scalemon.probes.step.probe import StepProbe

__all__ = ["StepProbe"]
