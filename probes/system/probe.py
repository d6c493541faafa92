"""One small interface over the host, network and GPU probes, for every view.

The caller schedules `sample()` (every DEFAULT_INTERVAL_S by default) and
gets one immutable `SystemSnapshot`. Each part fails on its own: a part that
raises becomes its `unavailable` snapshot with the reason, and the others
still read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from scalemon.core.snapshots import (
    GpuSnapshot,
    GpuVendorStatus,
    HostSnapshot,
    NetSnapshot,
    SystemSnapshot,
)
from scalemon.probes.system.gpu import GpuProbe, probe_gpus
from scalemon.probes.system.host import HostProbe
from scalemon.probes.system.net import NetProbe, interface_toward

__all__ = ["DEFAULT_INTERVAL_S", "GpuVendorStatus", "SystemProbe", "SystemSnapshot"]

DEFAULT_INTERVAL_S = 1.0


class SystemProbe:
    """Polls host, network and GPUs for the run rooted at `root_pids`.

    `master_addr` picks the run interface (see `net.interface_toward`);
    `interface` names it outright. `gpu_probes` replaces `probe_gpus()`
    (pass () for none, e.g. when replaying another machine's run).
    Not thread-safe: sample from one thread.
    """

    def __init__(
        self,
        root_pids: Iterable[int] = (),
        rank_of: Mapping[int, int] | None = None,
        master_addr: str | None = None,
        *,
        interface: str | None = None,
        gpu_probes: Sequence[GpuProbe] | None = None,
    ):
        self._rank_of = dict(rank_of or {})
        self._host = HostProbe(root_pids, self._rank_of)
        if interface is None and master_addr:
            interface = interface_toward(master_addr)
        self._net_reason = None
        if interface is None and master_addr:
            self._net_reason = f"no interface found toward {master_addr}"
        self._net = NetProbe(interface)
        self._gpus = tuple(probe_gpus() if gpu_probes is None else gpu_probes)

    @property
    def run_interface(self) -> str | None:
        return self._net.run_interface

    def set_roots(self, pids: Iterable[int]) -> None:
        self._host.set_roots(pids)

    def set_rank_map(self, rank_of: Mapping[int, int]) -> None:
        self._rank_of = dict(rank_of)
        self._host.set_rank_map(self._rank_of)

    def bytes_between(self, t0: float, t1: float, *, wall: bool = False) -> tuple[float, float]:
        """(rx, tx) bytes on the run interface between two times; see NetProbe.bytes_between."""
        return self._net.bytes_between(t0, t1, wall=wall)

    def sample(self) -> SystemSnapshot:
        t_monotonic, t_wall = time.monotonic(), time.time()
        host = _guarded(self._host.sample, HostSnapshot.unavailable)
        net = _guarded(
            self._net.sample, lambda why: NetSnapshot.unavailable(why, self._net.run_interface)
        )
        reasons = [
            (part, snap.error) for part, snap in (("host", host), ("net", net)) if snap.error
        ]
        if self._net_reason:
            reasons.append(("net", self._net_reason))
        rank_of = {**host.rank_by_pid(), **self._rank_of}
        gpus: list[GpuSnapshot] = []
        for probe in self._gpus:
            try:
                gpus += probe.sample(rank_of)
            except Exception as exc:  # a vendor probe should not raise; if one does, it alone fails
                reasons.append((f"gpus:{probe.vendor}", f"{type(exc).__name__}: {exc}"))
        vendors = tuple(GpuVendorStatus(p.vendor, p.available, p.reason) for p in self._gpus)
        return SystemSnapshot(host, net, tuple(gpus), t_monotonic, t_wall, vendors, tuple(reasons))

    def close(self) -> None:
        for probe in self._gpus:
            probe.close()


def _guarded(sample, unavailable):
    """sample(), or unavailable(reason) when it raises: one part's failure is its own."""
    try:
        return sample()
    except Exception as exc:
        return unavailable(f"{type(exc).__name__}: {exc}")
