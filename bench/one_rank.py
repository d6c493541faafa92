"""What the in-process probe benchmarks share: a 1-rank gloo process group, so collectives and
DDP run for real in one process, and a run dir with a live monitor socket beside it."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path


class OneRank:
    def __init__(self, prefix: str) -> None:
        import torch.distributed as dist

        self.work = Path(tempfile.mkdtemp(prefix=prefix))
        dist.init_process_group("gloo", init_method=f"file://{self.work / 'pg'}", rank=0,
                                world_size=1)
        self.run = self.work / "run"
        (self.run / "monitors").mkdir(parents=True)
        self.monitor = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.monitor.bind(str(self.run / "monitors" / "bench.sock"))
        self.monitor.setblocking(False)

    def drain(self) -> None:
        """The monitor's side, untimed, after every step: Linux queues only 10 datagrams per
        socket by default (net.unix.max_dgram_qlen); more would be counted as drops."""
        while True:
            try:
                self.monitor.recv(65536)
            except BlockingIOError:
                return
