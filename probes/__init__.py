"""Probes: the in-trainer step probe and the host, network and GPU pollers."""

from scalemon.probes.step import StepProbe

__all__ = ["StepProbe"]
