"""The relay of a multi-node run, as the supervisor runs it: node 0's server or another node's
client on a thread of its own, for as long as the run (protocol: relay_protocol.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from scalemon.core.config import RelayServerStatus, RunConfig
from scalemon.io.rundir import RunDir
from scalemon.run import relay_protocol as protocol
from scalemon.run.relay_client import RelayClient
from scalemon.run.relay_protocol import LINGER_S, SEND_POLL_S
from scalemon.run.relay_server import RelayServer


class Relay:
    """The relay of one supervised run, on its own thread: `start`, then `finish`."""

    def __init__(self, run: RunDir, config: RunConfig, log: Callable[[str], None] = protocol.log
                 ) -> None:
        self.stop, self.done = threading.Event(), threading.Event()
        self.log = log
        self.server: RelayServer | None = None
        self.client: RelayClient | None = None
        serve: Callable[..., None]
        args: tuple[threading.Event, ...]
        if config.launch.node_rank == 0:
            self.server = RelayServer(run, config, log)
            serve, args = self.server.serve, (self.stop,)
        else:
            self.client = RelayClient(run, config, log)
            serve, args = self.client.serve, (self.stop, self.done)
        self.thread = threading.Thread(target=serve, args=args, name="scalemon-relay",
                                       daemon=True)

    def start(self) -> Relay:
        self.thread.start()
        return self

    def finish(self, timeout: float = LINGER_S) -> bool:
        """After the launcher exits: let the last records cross (node 0: until every node
        said bye), at most `timeout` seconds; True if nothing was left behind."""
        deadline = time.monotonic() + timeout
        if self.client is not None:
            self.done.set()
            self.thread.join(timeout)
            complete = self.client.delivered
            if not complete:
                self.log(f"gave up after {timeout:.0f} s: records not sent to node 0 stay "
                         "in this run dir")
        elif self.server is not None:
            while not self.server.all_done and time.monotonic() < deadline:
                time.sleep(SEND_POLL_S)
            complete = self.server.all_done
            for node, link in self.server.nodes.items():
                if not link.done:
                    self.log(f"node {node} did not finish sending within {timeout:.0f} s: "
                             "the rest of its records are in its own run dir")
        self.stop.set()
        self.thread.join(max(0.0, deadline - time.monotonic()) + 2 * SEND_POLL_S)
        return complete


def start_relay(run: RunDir, config: RunConfig, log: Callable[[str], None] = protocol.log
                ) -> Relay | None:
    """The run's relay, started; None for a one-node run or when it cannot start (the run
    goes on without it: every node's records stay in its own run dir)."""
    if config.launch.nnodes < 2 or config.relay is None:
        return None
    try:
        return Relay(run, config, log).start()
    except OSError as error:
        where = f"{config.launch.master_addr}:{config.relay.port}"
        log(f"cannot listen on {where}: {error.strerror or error}; remote ranks stay on "
            "their own nodes")
        status = RelayServerStatus(listen=where, error=error.strerror or str(error))
        protocol.StatusWriter(run).write(status, urgent=True)
        return None
