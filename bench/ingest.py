"""Records per second one monitor ingests, losing none: 200,000/s from files, 50,000/s by socket.

    .venv/bin/python bench/ingest.py [--records N] [--seconds S]

A real RunDirSource, on a run dir of its own, takes realistic step records (phases
and sync, two ranks, every record distinct) three ways:

- files: N records in two rank files, folded from the run dir (RecordTail,
  codec.decode, RunState.apply), as `scalemon replay` and a late `attach` do;
- socket, flat out: another process sends N datagrams to the collector's socket
  with blocking sends, so a full queue makes it wait and nothing is dropped:
  the rate is what the collector's polls take in;
- socket, paced: another process sends at a fixed rate for S seconds with
  non-blocking sends, as the step probe does (a full queue drops the datagram).
  Rates double until one loses datagrams; the highest with none lost is
  reported. Linux queues only net.unix.max_dgram_qlen datagrams (often 10)
  per socket, so this one says more about the scheduler than the monitor.

Every record the collector folded is counted against those sent. No asserts
(DESIGN.md: benchmarks are ratios measured in one run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runs import make_run, step_template, write_config

from scalemon.core import codec, record_rules
from scalemon.io.rundir import RunDir
from scalemon.sources.rundir import RunDirSource

TARGET = 50_000
FILES_TARGET = 200_000  # issue 16: from files, validated (msgspec)

SENDER = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[1])
from runs import step_template
path, count, rate, first = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
templates = [step_template(rank) for rank in (0, 1)]
t0 = 1.8e9
lines = [templates[i % 2].format(t=t0 + (first + i // 2) * 0.5, step=first + i // 2, loss=2.0,
                                 ready=t0).encode() for i in range(count)]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.connect(path)
sock.setblocking(rate <= 0)
print("ready", flush=True)
sys.stdin.readline()
sent = dropped = 0
start = time.perf_counter()
for i, line in enumerate(lines):
    if rate > 0:
        due = start + i / rate
        while time.perf_counter() < due:
            pass
    try:
        sock.send(line)
        sent += 1
    except BlockingIOError:
        dropped += 1
print(sent, dropped, time.perf_counter() - start, flush=True)
"""


def fold_files(root: Path, count: int) -> dict:
    run = make_run(root, count // 2, name="files")
    write_config(run, count // 2)
    t0 = time.perf_counter()
    collector = RunDirSource(run, live=False)
    seconds = time.perf_counter() - t0
    folded = collector.state.records - 2  # less the start records
    collector.close()
    return {"records": count, "folded": folded, "seconds": seconds, "rate": folded / seconds}


def decode_only(root: Path, count: int) -> dict:
    """The decoding alone, per record, of the files' lines: codec.decode_many (msgspec into
    the record Structs, the guards checked once) against the reference every other line
    takes (json.loads, then the hand-written rules in record_rules)."""
    run = make_run(root, count // 2, name="decode")
    lines = [line for path in run.rank_files() for line in path.read_bytes().splitlines()]
    t0 = time.perf_counter()
    fast, bad = codec.decode_many(lines)
    t1 = time.perf_counter()
    for line in lines:
        record_rules.parse(json.loads(line))
    t2 = time.perf_counter()
    return {"records": len(lines), "decoded": len(fast), "bad": bad,
            "fast_us": (t1 - t0) / len(lines) * 1e6, "reference_us": (t2 - t1) / len(lines) * 1e6}


def through_socket(root: Path, name: str, count: int, rate: float) -> dict:
    """Send `count` datagrams at `rate` a second (0: flat out, blocking) to a collector."""
    run = RunDir.create(root / "runs" / name)
    write_config(run, count)
    collector = RunDirSource(run)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(Path(__file__).parent),
                               str(collector.socket.path), str(count), str(rate), "0"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sender.stdout.readline()  # encoded, connected
        sender.stdin.write("go\n")
        sender.stdin.flush()
        t0 = last = time.perf_counter()
        while True:
            done = sender.poll() is not None  # before draining: all it sent is queued
            if collector.poll(0.05):
                last = time.perf_counter()
            elif done:
                break
        sent, dropped, send_s = sender.stdout.readline().split()
    finally:
        sender.kill()
        sender.wait()
    folded = collector.state.records
    collector.close()
    seconds = last - t0
    return {"rate_asked": rate, "sent": int(sent), "dropped": int(dropped), "folded": folded,
            "lost": int(sent) - folded, "seconds": seconds, "send_s": float(send_s),
            "rate": folded / seconds if seconds > 0 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="per paced rate")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    options = parser.parse_args()
    step_template(0)  # fail early if the template does not encode
    with tempfile.TemporaryDirectory(prefix="scalemon-ingest-") as tmp:
        root = Path(tmp)
        files = fold_files(root, options.records)
        decoding = decode_only(root, options.records)
        flat = through_socket(root, "flat", options.records, 0)
        paced, rate = [], 10_000
        while rate <= 400_000:
            result = through_socket(root, f"paced-{rate}", int(rate * options.seconds), rate)
            paced.append(result)
            if result["dropped"] or result["lost"]:
                break
            rate *= 2
    clean = [p["rate_asked"] for p in paced if not p["dropped"] and not p["lost"]]
    figures = {"files": files, "decode": decoding, "flat": flat, "paced": paced,
               "paced_max": max(clean) if clean else 0}
    qlen = Path("/proc/sys/net/unix/max_dgram_qlen")
    qlen = qlen.read_text().strip() if qlen.exists() else "?"
    print(f"ingest: step records with phases and sync, two ranks, every one distinct "
          f"(max_dgram_qlen {qlen})")
    print(f"  files, {files['records']:,} records folded from the run dir: "
          f"{files['rate']:,.0f}/s ({files['rate'] / FILES_TARGET:.2f}x the {FILES_TARGET:,}/s "
          f"target), "
          f"{files['records'] - files['folded']} lost")
    print(f"  decoding alone: msgspec {decoding['fast_us']:.2f} µs a record, the reference "
          f"(json and the hand-written rules) {decoding['reference_us']:.2f} µs "
          f"({decoding['reference_us'] / decoding['fast_us']:.1f}x), "
          f"{decoding['records'] - decoding['decoded'] - decoding['bad']} lost")
    print(f"  socket flat out, {flat['sent']:,} datagrams, blocking sends: "
          f"{flat['rate']:,.0f}/s ({flat['rate'] / TARGET:.2f}x the target), "
          f"{flat['lost']} lost")
    for p in paced:
        print(f"  socket paced at {p['rate_asked']:,.0f}/s for {options.seconds:g} s: "
              f"{p['sent']:,} sent, {p['dropped']:,} dropped by the sender, "
              f"{p['folded']:,} folded")
    if options.json:
        Path(options.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
