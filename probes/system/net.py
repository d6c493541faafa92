"""Network probe: per-interface rates from kernel counters (psutil), and the run's interface.

Rates are counter deltas between two samples over monotonic time. A counter
that goes backwards is a 32-bit counter that wrapped (some drivers) when the
wrapped delta is plausible, else a reset (the interface was re-created), whose
rate is N/A for that sample. An interface that appears has no rate until its
second sample; one that disappears drops out of the snapshot.

For bytes moved per training step, the probe keeps a ring of (time, cumulative
bytes) samples of the run interface and interpolates between them:
``bytes_between(step_start, step_end)``.
"""

from __future__ import annotations

import bisect
import ipaddress
import os
import socket
import time
from collections import deque
from collections.abc import Mapping

import psutil

from scalemon.core.na import NA, ratio
from scalemon.core.snapshots import NetSnapshot, NicSnapshot

__all__ = ["NetProbe", "NetSnapshot", "NicSnapshot", "interface_toward"]

_WRAP32 = 2**32
_STATS_TTL_S = 10.0  # link speed and up/down change rarely; reading them costs an ioctl each
_FIRST = "first sample: a rate needs two"
# psutil's snetio fields, in order, and the snapshot rate each becomes.
_RATE_FIELDS = (
    ("bytes_sent", "tx_bytes_per_s"),
    ("bytes_recv", "rx_bytes_per_s"),
    ("packets_sent", "tx_packets_per_s"),
    ("packets_recv", "rx_packets_per_s"),
    ("errin", "rx_errors_per_s"),
    ("errout", "tx_errors_per_s"),
    ("dropin", "rx_drops_per_s"),
    ("dropout", "tx_drops_per_s"),
)


class NetProbe:
    """Samples every interface; `interface` names the run's (see `interface_toward`).

    Not thread-safe: sample from one thread.
    """

    def __init__(self, interface: str | None = None, history: int = 300):
        self._run = interface
        self._prev: dict[str, tuple[float, tuple[int, ...]]] = {}
        self._prev_t: float | None = None
        self._stats: dict = {}  # psutil.net_if_stats(), refreshed every _STATS_TTL_S
        self._stats_t = -_STATS_TTL_S
        self._history: deque[tuple[float, float, float, float]] = deque(maxlen=history)
        self._run_total = [0.0, 0.0]  # unwrapped rx, tx bytes on the run interface

    @property
    def run_interface(self) -> str | None:
        return self._run

    def set_interface(self, name: str | None) -> None:
        if name != self._run:
            self._run = name
            self._history.clear()

    def sample(self) -> NetSnapshot:
        try:
            return self._sample()
        except Exception as exc:  # a probe never raises into the monitor
            self._history.clear()
            return NetSnapshot.unavailable(f"{type(exc).__name__}: {exc}", self._run)

    def _sample(self) -> NetSnapshot:
        now, wall = time.monotonic(), time.time()
        counters = self._read_counters()
        if any(name not in self._stats for name in counters) or now - self._stats_t > _STATS_TTL_S:
            self._stats, self._stats_t = self._read_stats(), now
        nics = []
        deltas: dict[str, list[int | None] | None] = {}
        for name in sorted(counters):
            values = tuple(counters[name][: len(_RATE_FIELDS)])
            prev = self._prev.get(name)
            self._prev[name] = (now, values)
            if prev is None:
                deltas[name] = None
            else:
                deltas[name] = [_delta(a, b) for a, b in zip(prev[1], values, strict=True)]
            nics.append(self._nic(name, values, deltas[name], prev and now - prev[0]))
        for gone in self._prev.keys() - counters.keys():
            del self._prev[gone]
        interval = now - self._prev_t if self._prev_t is not None else NA
        self._prev_t = now
        run = None
        if self._run is not None:
            run = next((n for n in nics if n.name == self._run), None)
            if run is None:
                run = NicSnapshot.missing(self._run, "no such interface on this machine now")
            self._record_run(now, wall, self._run in deltas, deltas.get(self._run))
        return NetSnapshot(now, wall, interval, tuple(nics), self._run, run)

    def bytes_between(self, t0: float, t1: float, *, wall: bool = False) -> tuple[float, float]:
        """(rx, tx) bytes moved on the run interface between t0 and t1.

        Times are time.monotonic() values, or time.time() values with
        wall=True (records carry wall time). Linear interpolation between
        samples; NA until samples cover both ends (ask again after the next
        sample), or when the interface was reset or missing in between.
        """
        col = 1 if wall else 0
        times = [h[col] for h in self._history]
        if len(times) < 2 or not times[0] <= t0 <= t1 <= times[-1]:
            return NA, NA
        a, b = self._interpolate(times, t0), self._interpolate(times, t1)
        return b[0] - a[0], b[1] - a[1]

    def _interpolate(self, times: list[float], t: float) -> tuple[float, float]:
        j = min(max(bisect.bisect_left(times, t), 1), len(times) - 1)
        (*_, rx_a, tx_a), (*_, rx_b, tx_b) = self._history[j - 1], self._history[j]
        t_a, t_b = times[j - 1], times[j]
        f = (t - t_a) / (t_b - t_a) if t_b > t_a else 1.0
        return rx_a + f * (rx_b - rx_a), tx_a + f * (tx_b - tx_a)

    def _record_run(self, now: float, wall: float, present: bool, delta) -> None:
        if not present:
            self._history.clear()  # gone: nothing spans the gap
            return
        if delta is None or delta[0] is None or delta[1] is None:
            self._history.clear()  # new or reset: start again from this sample
            self._run_total = [0.0, 0.0]
        else:
            self._run_total[0] += delta[1]  # bytes_recv
            self._run_total[1] += delta[0]  # bytes_sent
        self._history.append((now, wall, self._run_total[0], self._run_total[1]))

    def _nic(self, name: str, values, delta, dt: float | None) -> NicSnapshot:
        stats = self._stats.get(name)
        speed = float(stats.speed) if stats is not None and stats.speed > 0 else NA
        reasons = []
        if speed is NA:
            reasons.append(("speed_mbps", "the kernel reports no link speed"))
        rates = {}
        for i, (_, field) in enumerate(_RATE_FIELDS):
            if delta is None or not dt or dt <= 0:
                rates[field] = NA
                reasons.append((field, _FIRST))
            elif delta[i] is None:
                rates[field] = NA
                reasons.append((field, "counter went backwards: interface re-created?"))
            else:
                rates[field] = delta[i] / dt
        rx, tx = rates["rx_bytes_per_s"], rates["tx_bytes_per_s"]
        busier = NA if rx is NA or tx is NA else max(rx, tx)
        return NicSnapshot(
            name=name,
            is_up=stats.isup if stats is not None else None,
            is_loopback=_is_loopback(name, stats),
            speed_mbps=speed,
            rx_bytes_total=values[1],
            tx_bytes_total=values[0],
            utilisation_percent=ratio(busier * 8 * 100, speed * 1e6),
            reasons=tuple(reasons),
            **rates,
        )

    # The two reads from the kernel, separate so tests can feed counters.
    def _read_counters(self) -> Mapping[str, tuple[int, ...]]:
        return psutil.net_io_counters(pernic=True, nowrap=False)  # we unwrap ourselves

    def _read_stats(self) -> dict:
        return psutil.net_if_stats()


def _delta(old: int, new: int) -> int | None:
    """Counter increase, across a 32-bit wrap; None for a reset."""
    if new >= old:
        return new - old
    wrapped = new + _WRAP32 - old
    if old < _WRAP32 and wrapped < _WRAP32 // 2:
        return wrapped
    return None


def _is_loopback(name: str, stats) -> bool:
    flags = getattr(stats, "flags", "") or ""
    return "loopback" in flags.split(",") or name == "lo"


def interface_toward(address: str, env: Mapping[str, str] | None = None) -> str | None:
    """The interface this machine's traffic to `address` leaves by, or None if unknown.

    GLOO_SOCKET_IFNAME wins when set (the first name of a comma-separated
    list), as it does for gloo. Otherwise the kernel's own choice: connect()
    of a UDP socket picks the route and source address without sending
    anything, and the interface holding that source address is the answer:
    loopback for 127.0.0.1 or localhost, the LAN interface toward a peer. An address of
    this machine's own (torchrun --standalone's MASTER_ADDR is the host name) is loopback too:
    the kernel sends traffic to itself over lo, whatever interface holds the address.
    """
    env = os.environ if env is None else env
    forced = env.get("GLOO_SOCKET_IFNAME", "").split(",")[0].strip()
    if forced:
        return forced
    try:
        targets = socket.getaddrinfo(address, 9, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, _, _, _, sockaddr in targets:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(sockaddr)
                source = sock.getsockname()[0]
        except OSError:
            continue  # no route for this family
        if _interface_holding(str(sockaddr[0])) is not None:  # ours: the traffic stays local
            source = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        name = _interface_holding(source)
        if name is not None:
            return name
    return None


def _interface_holding(address: str) -> str | None:
    wanted = ipaddress.ip_address(address.split("%")[0])
    for name, addrs in psutil.net_if_addrs().items():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                if ipaddress.ip_address(addr.address.split("%")[0]) == wanted:
                    return name
            except ValueError:
                continue
    return None
