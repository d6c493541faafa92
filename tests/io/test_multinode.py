"""Across machines, without a network: the sync model and advice, which node is behind, the
command for the other nodes, and bad multi-node options (one line, exit code 2)."""

import os
import shlex
import subprocess
import sys
from dataclasses import asdict

import pytest
from support.builders import T0, run_config, sync
from support.builders import fed as fold
from support.builders import start as base_start
from support.builders import step as base_step

from scalemon.cli.run_command import run as run_command
from scalemon.core.config import relay_status_from_dict
from scalemon.run import launch, relay_protocol
from scalemon.state.analysis import predict_accumulation
from scalemon.state.observations import RelaySeen, SystemSeen
from scalemon.state.summary import summarize
from scalemon.views import headless

GRAD_BYTES = 9_961_472  # depth 2, vocab 8192: 2.49M fp32 parameters


def config(node_rank=0, link_bit_s=100e6, nproc=1, tokens_per_step=1024):
    return run_config(name="mn", model={"depth": 2, "vocab": 8192},
                      train={"steps": 100, "tokens_per_step": tokens_per_step},
                      launch={"world_size": 2 * nproc, "nproc_per_node": nproc, "nnodes": 2,
                              "node_rank": node_rank, "link_bit_s": link_bit_s})


def start(rank, host):
    return base_start(rank, host=host)


def step(rank, n, micro=1, exposed=0.9, compute=0.12):
    """A network-bound step: `micro` micro-steps of `compute` s, then `exposed` s of sync."""
    phases = {"data": 0.0, "forward": micro * compute / 3,
              "backward": micro * compute * 2 / 3 + exposed, "optimizer": 0.02}
    dt = micro * compute + exposed + 0.02
    timing = sync(exposed, exposed + 0.01, overlap=0.01, nbytes=GRAD_BYTES, last_ready=T0 + n)
    return base_step(rank, n, t=T0 + 1 + n * dt, dt=dt, phases=phases, tokens=1024 * micro,
                     loss=8.0, micro_steps=micro, timing=timing)


def fed(cfg, records, now=None):
    return fold(records, cfg, now)


def relay_seen(data):
    return RelaySeen(relay_status_from_dict(data))


def at(state, now=T0 + 20):
    return summarize(state, now)


def test_sync_model_beside_the_measurement():
    state = fed(config(), [start(0, "a"), start(1, "b")] +
                [step(r, n) for n in range(10) for r in (0, 1)])
    model = at(state).sync_model
    # 2(n-1)/n · bytes · 8 / bandwidth with n = 2 ranks: 9.96 MB at 100 Mbit/s
    assert model.predicted_s == pytest.approx(GRAD_BYTES * 8 / 100e6)
    assert model.sync_s == pytest.approx(0.9) and model.link_source == "--link"
    assert model.ring == 2 and model.bytes == GRAD_BYTES
    line = headless.status_line(at(state))
    assert "sync at least 900 ms (model 797 ms at 100 Mbit/s)" in line
    assert "model: 797 ms to all-reduce 9.96 MB in a ring of 2 over 100 Mbit/s (--link)" in \
        headless.report(at(state))
    # Without --link, the NIC's speed, when the kernel knows it.
    state = fed(config(link_bit_s=None), [step(r, n) for n in range(10) for r in (0, 1)])
    assert at(state).sync_model is None
    state.apply(SystemSeen(None, 10e6, 1e9))
    assert at(state).sync_model.link_source == "NIC" and at(state).sync_model.net_bytes == 10e6
    assert "the network probe saw 10.0 MB/step sent" in headless.report(at(state))


def test_sync_bound_advice_gives_accumulation_and_predicted_step():
    state = fed(config(), [step(r, n) for n in range(10) for r in (0, 1)])
    name, advice_words = at(state).regime, at(state).advice
    assert name == "sync-bound"
    advice = at(state).sync_advice
    # k ≥ a(1 − t)/(t·c) = 0.9 · 0.9 / (0.1 · 0.12) = 67.5
    assert advice.micro_steps == 68 and advice.tokens_per_step == 68 * 1024
    assert advice.step_s == pytest.approx(68 * 0.12 + 0.02 + 0.9)
    assert advice.sync_share < 0.1
    assert "68 micro-steps per allreduce (--tokens-per-step 69632)" in advice_words
    assert "sync-bound: use 68 micro-steps per allreduce" in headless.status_line(at(state))
    # The prediction for 4 micro-steps, and a run that took it: the same figures.
    step_s, share = predict_accumulation(at(state).split, at(state).micro_steps, 4)
    assert step_s == pytest.approx(4 * 0.12 + 0.02 + 0.9)
    measured = fed(config(tokens_per_step=4096),
                   [step(r, n, micro=4) for n in range(10) for r in (0, 1)])
    assert at(measured).micro_steps == 4
    assert at(measured).split.share("sync") == pytest.approx(share)
    assert at(measured).sync_advice.micro_steps == 68  # per micro-step compute is the same
    assert at(fed(config(), [step(r, n, exposed=0.01) for n in range(10)
                             for r in (0, 1)])).sync_advice is None


def test_node0_says_which_node_is_behind_and_why():
    records = [start(0, "a"), start(1, "b")] + [step(0, n) for n in range(30)] + \
        [step(1, n) for n in range(10)]
    now = T0 + 1 + 29 * 1.04 + 1
    state = fed(config(), records, now=now)
    state.apply(relay_seen({"role": "server", "nodes": {"1": {"connected": False,
                                                              "since": now - 40}}}))
    (lag,) = at(state, now).nodes_behind
    assert (lag.node, lag.hosts, lag.steps_behind, lag.relay_down_s) == (1, ("b",), 20, 40)
    assert state.phase == "training"  # node 1's silence is the relay's; the run steps on
    line = headless.status_line(at(state, now))
    assert "node 1 (b) behind by 20 steps (relay down 40 s)" in line
    assert at(state, now).to_dict()["nodes_behind"][0]["steps_behind"] == 20
    state.apply(relay_seen({"role": "server", "nodes": {"1": {"connected": True, "since": now}}}))
    assert "node 1 (b) behind by 20 steps (relay slow)" in headless.status_line(at(state, now))
    # Records in transit a moment behind are not "behind".
    fresh = fed(config(), [step(0, n) for n in range(30)] + [step(1, n) for n in range(27)],
                now=T0 + 1 + 29 * 1.04)
    assert at(fresh, T0 + 1 + 29 * 1.04).nodes_behind == ()
    # A node never heard from at all.
    silent = fed(config(), [step(0, n) for n in range(5)], now=T0 + 10)
    assert "node 1: no records yet" in headless.status_line(at(silent, T0 + 10))


def test_other_nodes_show_their_own_view_and_the_relay():
    state = fed(config(node_rank=1), [start(1, "b")] + [step(1, n) for n in range(10)],
                now=T0 + 12)
    assert at(state, T0 + 12).nodes_behind == ()  # node 1 knows only its own ranks
    state.apply(relay_seen({"role": "client", "connected": False, "since": T0 - 28,
                            "error": "node 0 refused this node", "delivered": False}))
    line = headless.status_line(at(state, T0 + 12))
    assert "relay to node 0 down 40 s (records kept here)" in line
    assert "node 0 refused this node" in headless.report(at(state, T0 + 12))
    state.apply(relay_seen({"role": "client", "connected": True, "since": T0}))
    assert "relay" not in headless.status_line(at(state, T0 + 12))
    assert state.step == 9 and state.phase == "training"


def test_remote_ranks_belong_to_their_node():
    state = fed(config(nproc=2), [start(r, "ab"[r // 2]) for r in range(4)])
    assert [state.ranks[r].node for r in range(4)] == [0, 0, 1, 1]


def test_the_printed_command_starts_the_same_run_on_the_other_node():
    opts = launch.RunOptions(depth=2, vocab=8192, backend="gloo", nproc_per_node=1, nnodes=2,
                             master_addr="10.0.0.1", master_port=29611, steps=8,
                             tokens_per_step=4096, link="100mbit", name="mn",
                             checkpoint_every=0)
    node0 = launch.build_config(opts, "cpu", "gloo")
    assert node0.relay.port == 29612 and len(node0.relay.secret) == 64
    assert node0.launch.link_bit_s == 100e6
    words = shlex.split(launch.peer_command(node0))
    env, args = words[0], words[3:]
    assert words[1:3] == ["scalemon", "run"]
    assert env == f"{relay_protocol.SECRET_ENV}={node0.relay.secret}"
    params = run_command.make_context("run", args).params
    for name in ("script", "resume", "no_tui", "interval", "price"):
        params.pop(name)
    node1 = launch.build_config(launch.RunOptions(**{**params, "run_secret": env.split("=")[1]}),
                                "cpu", "gloo")
    for section in ("model", "train", "relay"):
        assert getattr(node1, section) == getattr(node0, section), section
    launch0, launch1 = asdict(node0.launch), asdict(node1.launch)
    differ = {key for key in launch0 if launch0[key] != launch1[key]}
    assert differ <= {"node_rank", "threads_per_rank"} and node1.launch.node_rank == 1
    assert launch.build_config(launch.RunOptions(backend="gloo"), "cpu", "gloo").relay is None


@pytest.mark.parametrize("args, message", [
    (["--node-rank", "1"], "give the secret node 0 printed"),
    (["--node-rank", "1", "--run-secret", "abc"], "64 hex digits"),
    (["--link", "fast"], "cannot parse link speed 'fast'"),
    (["--relay-port", "29500"], "is the rendezvous port"),
    (["--node-rank", "2"], "--node-rank must be in 0..1"),
])
def test_bad_multinode_options_fail_in_one_line(tmp_path, args, message):
    env = {**os.environ, "SCALEMON_HOME": str(tmp_path)}
    env.pop(relay_protocol.SECRET_ENV, None)
    result = subprocess.run([sys.executable, "-m", "scalemon", "run", "--backend", "gloo",
                             "--nnodes", "2", "--master-addr", "10.0.0.1", *args],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scalemon: error:") and message in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
