"""The network probe: real loopback traffic, and fed counters for wrap, reset and churn."""

import ctypes
import fcntl
import multiprocessing
import socket
import struct
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from scalemon.core.na import NA
from scalemon.probes.system.net import NetProbe, NetSnapshot, interface_toward

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _private_loopback() -> bool:
    """Move this process into a network namespace of its own with lo up.

    Other processes' loopback traffic (gloo tests, say) would otherwise count
    in the rate we check. Needs CAP_SYS_ADMIN or unprivileged user namespaces;
    without either we stay shared."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0 and libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return False
    with socket.socket() as s:
        ifreq = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
    return True


def _send_over_loopback(nbytes: int, results) -> None:
    try:
        results.put(_measure_loopback(nbytes))
    except BaseException as exc:  # report it: the parent would otherwise wait for nothing
        results.put({"error": repr(exc)})


def _measure_loopback(nbytes: int) -> dict:
    isolated = _private_loopback()
    probe = NetProbe(interface_toward("127.0.0.1"))
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def drain():
        conn, _ = server.accept()
        total = 0
        while chunk := conn.recv(1 << 20):
            total += len(chunk)
        received.append(total)

    reader = threading.Thread(target=drain)
    reader.start()
    before = probe.sample()
    with socket.create_connection(server.getsockname()) as conn:
        chunk = b"\0" * (1 << 20)
        for _ in range(nbytes // len(chunk)):
            conn.sendall(chunk)
    reader.join()
    server.close()
    after = probe.sample()
    return {
        "isolated": isolated,
        "received": received[0],
        "rate_bytes": after.run.rx_bytes_per_s * after.interval_s,
        "tx_rate_bytes": after.run.tx_bytes_per_s * after.interval_s,
        "between": probe.bytes_between(before.t_monotonic, after.t_monotonic),
        "between_wall": probe.bytes_between(before.t_wall, after.t_wall, wall=True),
        "run_interface": after.run_interface,
        "is_loopback": after.run.is_loopback,
    }


def test_loopback_bytes_show_in_the_loopback_rate():
    ctx = multiprocessing.get_context("fork")  # the namespace change stays in the child
    results = ctx.Queue()
    child = ctx.Process(target=_send_over_loopback, args=(64 << 20, results))
    child.start()
    got = results.get(timeout=60)
    child.join()
    assert "error" not in got, got["error"]
    sent = got["received"]
    assert sent == 64 << 20
    assert got["is_loopback"]
    note = "" if got["isolated"] else " (shared loopback: other traffic counts too)"
    assert got["rate_bytes"] == pytest.approx(sent, rel=0.10), note
    assert got["tx_rate_bytes"] == pytest.approx(sent, rel=0.10), note
    assert got["between"][0] == pytest.approx(got["rate_bytes"])
    assert got["between_wall"][0] == pytest.approx(got["rate_bytes"])


def test_interface_toward_loopback_addresses():
    lo = interface_toward("127.0.0.1", env={})
    assert lo is not None and psutil.net_if_stats()[lo].isup
    assert interface_toward("localhost", env={}) == lo
    assert interface_toward("127.0.0.5", env={}) == lo


def test_interface_toward_own_lan_address_is_loopback():
    """torchrun --standalone gives the ranks the host name as MASTER_ADDR: traffic to one of
    this machine's own addresses goes over lo (the kernel's local route), and lo counts it."""
    own = [
        (name, a.address)
        for name, addrs in psutil.net_if_addrs().items()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    if not own:
        pytest.skip("no non-loopback IPv4 address here")
    _, address = own[0]
    assert interface_toward(address, env={}) == interface_toward("127.0.0.1", env={})


def test_gloo_socket_ifname_wins():
    assert interface_toward("127.0.0.1", env={"GLOO_SOCKET_IFNAME": "eth7,eth8"}) == "eth7"


def test_unresolvable_address_is_none():
    assert interface_toward("no-such-host.invalid", env={}) is None


def test_loopback_has_no_speed_so_no_utilisation():
    probe = NetProbe(interface_toward("127.0.0.1", env={}))
    probe.sample()
    snap = probe.sample()
    assert snap.run.speed_mbps is NA
    assert snap.run.utilisation_percent is NA
    assert snap.run.reason("speed_mbps")


# Fed counters: (bytes_sent, bytes_recv, packets_sent, packets_recv, errin, errout, dropin, dropout)
def _fed(probe: NetProbe, speed_mbps=1000):
    feed = {}
    probe._read_counters = lambda: dict(feed)
    probe._read_stats = lambda: {
        name: SimpleNamespace(isup=True, speed=speed_mbps, flags="up,broadcast,running")
        for name in feed
    }
    return feed


def _counters(sent, recv, packets=0, errors=0, drops=0):
    return (sent, recv, packets, packets, errors, errors, drops, drops)


def test_rates_are_counter_deltas_over_the_interval():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    feed["eth0"] = _counters(1_000, 2_000)
    first = probe.sample()
    assert first.run.rx_bytes_per_s is NA and first.run.reason("rx_bytes_per_s")
    assert first.interval_s is NA
    feed["eth0"] = _counters(1_000 + 125_000, 2_000 + 250_000, packets=100, errors=3, drops=5)
    snap = probe.sample()
    nic = snap.run
    dt = snap.interval_s
    assert nic.tx_bytes_per_s * dt == pytest.approx(125_000)
    assert nic.rx_bytes_per_s * dt == pytest.approx(250_000)
    assert nic.rx_packets_per_s * dt == pytest.approx(100)
    assert nic.rx_errors_per_s * dt == pytest.approx(3)
    assert nic.tx_drops_per_s * dt == pytest.approx(5)
    assert nic.speed_mbps == 1000
    busier_bits = 250_000 / dt * 8
    assert nic.utilisation_percent == pytest.approx(100 * busier_bits / 1e9)
    assert nic.rx_bytes_total == 252_000 and nic.reasons == ()


def test_32bit_counter_wrap_is_unwrapped():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    feed["eth0"] = _counters(2**32 - 1_000, 2**32 - 500)
    probe.sample()
    feed["eth0"] = _counters(4_000, 1_500)
    snap = probe.sample()
    assert snap.run.tx_bytes_per_s * snap.interval_s == pytest.approx(5_000)
    assert snap.run.rx_bytes_per_s * snap.interval_s == pytest.approx(2_000)


def test_counter_reset_is_na_not_a_huge_or_negative_rate():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    feed["eth0"] = _counters(10**12, 10**12)  # 64-bit counters cannot have wrapped
    probe.sample()
    feed["eth0"] = _counters(100, 100)
    snap = probe.sample()
    assert snap.run.rx_bytes_per_s is NA
    assert "backwards" in snap.run.reason("rx_bytes_per_s")
    feed["eth0"] = _counters(300, 400)
    snap = probe.sample()
    assert snap.run.rx_bytes_per_s * snap.interval_s == pytest.approx(300)


def test_interfaces_appear_and_disappear():
    probe = NetProbe("veth1")
    feed = _fed(probe)
    feed["eth0"] = _counters(0, 0)
    snap = probe.sample()
    assert [n.name for n in snap.interfaces] == ["eth0"]
    assert snap.run.name == "veth1" and snap.run.rx_bytes_per_s is NA
    assert "no such interface" in snap.run.reason("name")

    feed["veth1"] = _counters(0, 0)
    snap = probe.sample()
    assert [n.name for n in snap.interfaces] == ["eth0", "veth1"]
    assert snap.interface("veth1").rx_bytes_per_s is NA  # new: no rate yet
    assert snap.interface("eth0").rx_bytes_per_s == 0.0  # a real zero stays zero

    feed["veth1"] = _counters(10, 10)
    assert probe.sample().run.rx_bytes_per_s > 0

    del feed["veth1"]
    snap = probe.sample()
    assert snap.interface("veth1") is None and snap.run.rx_bytes_per_s is NA

    feed["veth1"] = _counters(5, 5)  # back again, counting from scratch
    assert probe.sample().run.rx_bytes_per_s is NA
    feed["veth1"] = _counters(10, 10)
    snap = probe.sample()
    assert snap.run.rx_bytes_per_s * snap.interval_s == pytest.approx(5)


def test_bytes_between_interpolates_between_samples():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    times = []
    for i, total in enumerate((0, 1_000, 3_000, 3_000)):
        feed["eth0"] = _counters(2 * total, total)
        times.append(probe.sample().t_monotonic)
        if i < 3:
            time.sleep(0.01)
    t0, t1, t2, t3 = times
    assert probe.bytes_between(t0, t3) == pytest.approx((3_000, 6_000))
    assert probe.bytes_between(t1, t2) == pytest.approx((2_000, 4_000))
    rx, tx = probe.bytes_between((t1 + t2) / 2, t2)
    assert rx == pytest.approx(1_000) and tx == pytest.approx(2_000)
    assert probe.bytes_between(t2, t3) == pytest.approx((0, 0))
    assert probe.bytes_between(t0 - 1, t1) == (NA, NA)  # before the first sample
    assert probe.bytes_between(t2, t3 + 1) == (NA, NA)  # not sampled yet: ask again later


def test_bytes_between_does_not_span_a_reset():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    feed["eth0"] = _counters(10**12, 10**12)
    t0 = probe.sample().t_monotonic
    feed["eth0"] = _counters(0, 0)
    t1 = probe.sample().t_monotonic
    feed["eth0"] = _counters(50, 50)
    t2 = probe.sample().t_monotonic
    assert probe.bytes_between(t0, t2) == (NA, NA)
    assert probe.bytes_between(t1, t2) == pytest.approx((50, 50))


def test_changing_the_run_interface_forgets_history():
    probe = NetProbe("eth0")
    feed = _fed(probe)
    feed["eth0"] = feed["eth1"] = _counters(0, 0)
    t0 = probe.sample().t_monotonic
    feed["eth0"] = _counters(10, 10)
    t1 = probe.sample().t_monotonic
    probe.set_interface("eth1")
    assert probe.run_interface == "eth1"
    assert probe.bytes_between(t0, t1) == (NA, NA)


def test_unavailable_snapshot():
    snap = NetSnapshot.unavailable("psutil broke", run_interface="eth0")
    assert snap.error == "psutil broke" and snap.interfaces == ()
    assert snap.run.rx_bytes_per_s is NA and snap.run.reason("name") == "psutil broke"


def test_unreadable_counters_are_an_unavailable_snapshot_not_an_exception():
    probe = NetProbe("eth0")

    def broken():
        raise OSError("/proc/net/dev: permission denied")

    probe._read_counters = broken
    snap = probe.sample()
    assert "permission denied" in snap.error
    assert snap.run.rx_bytes_per_s is NA and "permission denied" in snap.run.reason(
        "rx_bytes_per_s"
    )
