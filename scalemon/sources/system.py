"""The system probes as a source of observations: a poll a second of the host, network and
GPUs of the run's processes on this machine, with the bytes the run interface sent per step."""

from __future__ import annotations

import statistics
import time

from scalemon.probes.system import SystemProbe
from scalemon.state.fold import RunState
from scalemon.state.observations import SystemSeen

SYSTEM_POLL_S = 1.0


class SystemWatch:
    """Not thread-safe: one thread samples (the source's)."""

    def __init__(self, root_pids: list[int], master_addr: str | None) -> None:
        self.probe = SystemProbe(root_pids=root_pids, master_addr=master_addr)
        self._roots = list(root_pids)
        self._known_pids: dict[int, int] = {}
        self._last = -float("inf")

    def due(self) -> bool:
        return time.monotonic() - self._last >= SYSTEM_POLL_S

    def sample(self, state: RunState, roots: list[int] | None = None) -> SystemSeen:
        """One poll, for the ranks the state knows on this node (other nodes' pids name
        processes on their machines, not on this one)."""
        pids = {info.pid: rank for rank, info in state.ranks.items()
                if info.pid and info.node == state.config.launch.node_rank}
        roots = self._roots if roots is None else roots
        if pids != self._known_pids or roots != self._roots:
            self._known_pids, self._roots = pids, roots
            self.probe.set_rank_map(pids)
            self.probe.set_roots(roots + list(pids))
        snapshot = self.probe.sample()
        self._last = time.monotonic()
        nic = snapshot.net.run
        return SystemSeen(snapshot=snapshot, net_bytes_per_step=self.bytes_per_step(state),
                          nic_bit_s=nic.speed_mbps * 1e6 if nic is not None else None)

    def bytes_per_step(self, state: RunState) -> float | None:
        """Median bytes this machine sent on the run interface during recent steps of the
        loss rank."""
        if state.loss_rank is None:
            return None
        moved = []
        for record in state.recent.get(state.loss_rank, ()):
            _, sent = self.probe.bytes_between(record.t - record.dt, record.t, wall=True)
            if sent == sent:  # NA is NaN: steps the samples do not cover yet
                moved.append(sent)
        return statistics.median(moved) if moved else None

    def close(self) -> None:
        self.probe.close()
