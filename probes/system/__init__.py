"""The monitor's pollers: host, network and GPUs (NVIDIA through nvidia-ml-py, AMD through
amdsmi), each read on the monitor's schedule into one immutable `SystemSnapshot`."""

from scalemon.probes.system.probe import DEFAULT_INTERVAL_S, SystemProbe

__all__ = ["DEFAULT_INTERVAL_S", "SystemProbe"]
