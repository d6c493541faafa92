"""Turning `scalemon run` options into a run dir and a launched, supervised run.

The ranks start through torch.distributed's own launcher (`python -m
torch.distributed.run`, the machinery behind torchrun), under a small
supervisor (`scalemon.run.supervise`) in a session of its own: the monitor can quit
or lose its SSH connection and the run goes on. The supervisor writes the
launcher's exit status into the run dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from scalemon.core import layout, scaling
from scalemon.core.config import (
    LaunchConfig,
    ModelConfig,
    RelayConfig,
    RunConfig,
    TrainConfig,
)
from scalemon.core.errors import LaunchError, RunDirError
from scalemon.core.units import parse_link
from scalemon.io.processes import SUPERVISOR_MODULE, process_alive
from scalemon.io.rundir import RunDir, check_name, runs_root
from scalemon.run import relay_protocol

INJECT_MODULE = "scalemon.probes.inject"
CPU_DEFAULTS = {"seq_len": 512, "device_batch": 1}  # the first step shows within seconds
CUDA_DEFAULTS = {"seq_len": 2048, "device_batch": 32}  # nanochat's


@dataclass(frozen=True)
class RunOptions:
    depth: int = 4
    vocab: int = scaling.DEFAULT_VOCAB
    backend: str | None = None  # gloo | nccl; None: from the device
    device: str = "auto"  # auto | cpu | cuda
    nproc_per_node: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    relay_port: int | None = None  # default: master_port + 1
    run_secret: str | None = None  # node 0 makes one; the other nodes must give it
    link: str | None = None  # the link between nodes, for the sync model ("1gbit")
    steps: int | None = None
    tokens_per_param: float | None = None
    tokens_per_step: int | None = None
    seq_len: int | None = None
    device_batch: int | None = None
    lr: float = 3e-3
    warmup_steps: int = 20
    seed: int = 1337
    checkpoint_every: int = 100
    threads_per_rank: int | None = None
    data: str | None = None
    name: str | None = None
    run_dir: str | None = None
    script: tuple[str, ...] = ()  # SCRIPT ARGS, or -m MODULE ARGS
    python: str | None = None  # the ranks' interpreter; None: scalemon's own


def cuda_device_count() -> int:
    """GPUs torch can use, asked in a child so the monitor never loads torch itself."""
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return int(out.strip() or 0)
    except (subprocess.SubprocessError, ValueError, OSError):
        return 0


def resolve_device(device: str, backend: str | None) -> tuple[str, str]:
    """(device, backend): gloo goes with the CPU, nccl with CUDA."""
    if device == "auto":
        if backend == "gloo":
            device = "cpu"
        elif backend == "nccl":
            device = "cuda"
        else:
            device = "cuda" if cuda_device_count() > 0 else "cpu"
    backend = backend or ("nccl" if device == "cuda" else "gloo")
    if (device, backend) == ("cpu", "nccl"):
        raise LaunchError("--backend nccl needs --device cuda (use gloo on the CPU)")
    if (device, backend) == ("cuda", "gloo"):
        raise LaunchError("--backend gloo trains on the CPU; use --backend nccl with --device "
                          "cuda, or --device cpu")
    return device, backend


def build_config(opts: RunOptions, device: str, backend: str, gpus: int = 0) -> RunConfig:
    """The run's config.json (docs/internals.md), checked for consistency."""
    try:
        shape = scaling.ModelShape(depth=opts.depth, vocab=opts.vocab)
    except ValueError as error:
        raise LaunchError(str(error)) from None
    if opts.data and not Path(opts.data).exists():
        raise LaunchError(f"--data {opts.data}: no such file or directory")
    defaults = CUDA_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    seq_len = opts.seq_len or defaults["seq_len"]
    device_batch = opts.device_batch or defaults["device_batch"]
    nproc = opts.nproc_per_node or (max(1, gpus) if device == "cuda" else 2)
    if device == "cuda" and gpus and nproc > gpus:
        raise LaunchError(f"--nproc-per-node {nproc} but only {gpus} GPU(s) here")
    if opts.nnodes < 1 or not 0 <= opts.node_rank < opts.nnodes:
        raise LaunchError(f"--node-rank must be in 0..{opts.nnodes - 1}")
    relay_config = _relay_config(opts)
    try:
        link_bit_s = parse_link(opts.link) if opts.link else None
    except ValueError as error:
        raise LaunchError(str(error)) from None
    world = nproc * opts.nnodes
    per_micro = device_batch * seq_len * world
    tokens_per_step = opts.tokens_per_step or per_micro
    if tokens_per_step % per_micro:
        raise LaunchError(
            f"--tokens-per-step {tokens_per_step} is not a multiple of device batch x seq len "
            f"x world = {device_batch} x {seq_len} x {world} = {per_micro}")
    if opts.steps and opts.tokens_per_param:
        raise LaunchError("give either --steps or --tokens-per-param, not both")
    steps: int | None = opts.steps or scaling.steps_for_tokens_per_param(
        shape, opts.tokens_per_param or 20.0, tokens_per_step)
    threads = opts.threads_per_rank or max(1, (os.cpu_count() or 1) // nproc)
    name = check_name(opts.name or f"d{opts.depth}-{time.strftime('%Y%m%d-%H%M%S')}")
    model = ModelConfig(depth=opts.depth, vocab=opts.vocab, seq_len=seq_len,
                        aspect_ratio=scaling.DEFAULT_ASPECT_RATIO,
                        head_dim=scaling.DEFAULT_HEAD_DIM)
    if opts.script:
        # Your script's model and horizon are its own: the probe's start record says them.
        model, steps = ModelConfig(), opts.steps
    return RunConfig(
        name=name, created=time.time(), command="script" if opts.script else "train",
        script=tuple(opts.script) or None, model=model,
        train=TrainConfig(device=device, backend=backend, device_batch=device_batch,
                          accum=tokens_per_step // per_micro, tokens_per_step=tokens_per_step,
                          steps=steps, lr=opts.lr, warmup_steps=opts.warmup_steps,
                          seed=opts.seed, checkpoint_every=opts.checkpoint_every,
                          data=str(Path(opts.data).resolve()) if opts.data else None),
        launch=LaunchConfig(nproc_per_node=nproc, nnodes=opts.nnodes, node_rank=opts.node_rank,
                            master_addr=opts.master_addr, master_port=opts.master_port,
                            world_size=world, threads_per_rank=threads, link_bit_s=link_bit_s),
        relay=relay_config, hosts=(socket.gethostname(),))


def _relay_config(opts: RunOptions) -> RelayConfig | None:
    """Where node 0 listens for the other nodes' records, and the run's shared secret."""
    if opts.nnodes == 1:
        return None
    if opts.run_secret is None and opts.node_rank > 0:
        raise LaunchError(f"--node-rank {opts.node_rank} joins node 0's run: give the secret "
                          "node 0 printed (--run-secret HEX or "
                          f"{relay_protocol.SECRET_ENV}=HEX)")
    try:
        secret = relay_protocol.check_secret(opts.run_secret) if opts.run_secret else \
            relay_protocol.new_secret()
    except ValueError as error:
        raise LaunchError(str(error)) from None
    port = opts.relay_port or relay_protocol.default_port(opts.master_port)
    if port == opts.master_port:
        raise LaunchError(f"--relay-port {port} is the rendezvous port; pick another")
    return RelayConfig(port=port, secret=secret)


def peer_command(config: RunConfig, node_rank: int = 1) -> str:
    """The `scalemon run` command that starts another node of this run, secret in the env
    (so it stays out of `ps` listings). Node-local settings (threads, GLOO_SOCKET_IFNAME)
    are left to that machine."""
    train, launch, relay_config = config.train, config.launch, config.relay
    assert relay_config is not None and launch.master_port is not None
    args: list[object] = [
        "scalemon", "run", "--device", train.device, "--backend", train.backend,
        "--nproc-per-node", launch.nproc_per_node, "--nnodes", launch.nnodes,
        "--node-rank", node_rank, "--master-addr", launch.master_addr,
        "--master-port", launch.master_port]
    if relay_config.port != relay_protocol.default_port(launch.master_port):
        args += ["--relay-port", relay_config.port]
    if launch.link_bit_s:
        args += ["--link", f"{launch.link_bit_s / 1e6:g}mbit"]
    args += ["--name", config.name, "--seed", train.seed, "--device-batch", train.device_batch,
             "--tokens-per-step", train.tokens_per_step, "--checkpoint-every",
             train.checkpoint_every, "--lr", train.lr]
    if train.steps:
        args += ["--steps", train.steps]
    if train.data:
        args += ["--data", train.data]
    if config.command == "script":
        args += ["--", *(config.script or ())]
    else:
        model = config.model
        args += ["--depth", model.depth, "--vocab", model.vocab, "--seq-len", model.seq_len]
    secret = f"{relay_protocol.SECRET_ENV}={relay_config.secret}"
    return shlex.join([secret, *map(str, args)])


def create_run(opts: RunOptions) -> RunDir:
    """Validate the options, make the run dir and write its config (nothing launched yet)."""
    python = check_python(opts.python, opts.script)
    device, backend = resolve_device(opts.device, opts.backend)
    gpus = cuda_device_count() if device == "cuda" else 0
    if device == "cuda" and gpus == 0:
        why = "--device cuda" if opts.device == "cuda" else f"--backend {backend} (CUDA)"
        raise LaunchError(f"{why} but torch sees no GPU here (use --backend gloo on the CPU)")
    config = build_config(opts, device, backend, gpus)
    path = Path(opts.run_dir).expanduser().resolve() if opts.run_dir else \
        runs_root() / config.name
    run = RunDir.create(path)
    launch = replace(config.launch, python=python, cwd=os.getcwd() if opts.script else None)
    if python:
        link_scalemon(run.path / layout.PYTHON_PATH)
    run.write_config(replace(config, name=run.name, launch=launch))
    return run


def link_scalemon(where: Path) -> Path:
    """A directory holding only `scalemon` (a link to this one), for another interpreter's
    PYTHONPATH: its ranks run this scalemon's probe (the records' schema is the monitor's)
    without scalemon installed there, and nothing else of this environment shadows theirs."""
    import scalemon

    where.mkdir(parents=True, exist_ok=True)
    link = where / "scalemon"
    if not link.is_symlink():
        link.symlink_to(Path(scalemon.__file__).resolve().parent, target_is_directory=True)
    return where


# Run by the ranks' interpreter before anything is launched: what would stop the run.
_CHECK = """
import importlib.util, json, os, sys
problems = []
if sys.version_info < (3, 11):
    problems.append("is Python %d.%d; scalemon needs 3.11+" % sys.version_info[:2])
for name in ("torch", "scalemon.probes.inject"):
    try:
        if importlib.util.find_spec(name) is None:
            problems.append("has no %s" % name)
    except Exception as error:
        problems.append("cannot import %s (%s)" % (name, error))
module = sys.argv[1]
if module:
    sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(module) is not None
    except Exception:
        found = False
    if not found:
        problems.append("finds no module %s from %s" % (module, os.getcwd()))
print(json.dumps(problems))
"""


def check_python(python: str | None, script: tuple[str, ...]) -> str | None:
    """The ranks' interpreter (an absolute path; None for scalemon's own), checked: it runs,
    is Python 3.11+, has torch and scalemon, and finds the script's module from here."""
    module = script[1] if script[:1] == ("-m",) and len(script) > 1 else ""
    if script[:1] == ("-m",) and not module:
        raise LaunchError("-m needs a module: scalemon run -- -m MODULE [ARGS]")
    if script and not module and not Path(script[0]).is_file():
        raise LaunchError(f"training script {script[0]!r} not found")
    if python is None and not module:
        return None  # scalemon's own interpreter has scalemon; torch_problem checked torch
    executable = shutil.which(python) if python else sys.executable
    if executable is None:
        raise LaunchError(f"--python {python}: no such interpreter")
    executable = os.path.abspath(executable)
    env = os.environ.copy()
    with tempfile.TemporaryDirectory() as scratch:
        if python:  # checked as its ranks will run: this scalemon on its path
            env["PYTHONPATH"] = _joined(str(link_scalemon(Path(scratch))), env)
        try:
            out = subprocess.run([executable, "-c", _CHECK, module], capture_output=True,
                                 text=True, timeout=120, env=env).stdout
            problems = json.loads(out.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            raise LaunchError(f"--python {python}: does not run as Python") from None
    if problems:
        raise LaunchError(f"{python or executable} {problems[0]}")
    return executable if python else None


def _joined(first: str, env: dict[str, str]) -> str:
    rest = env.get("PYTHONPATH")
    return f"{first}{os.pathsep}{rest}" if rest else first


def launcher_command(config: RunConfig, run: RunDir) -> list[str]:
    launch = config.launch
    cmd = [launch.python or sys.executable, "-m", "torch.distributed.run",
           "--nproc-per-node", str(launch.nproc_per_node)]
    if launch.nnodes == 1:
        cmd.append("--standalone")  # a free local rendezvous port, so runs never collide
    else:
        cmd += ["--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank),
                "--master-addr", str(launch.master_addr), "--master-port",
                str(launch.master_port)]
    if config.command == "script":  # each rank runs it with the probe injected
        return cmd + ["-m", INJECT_MODULE, *(config.script or ())]
    return cmd + ["-m", "scalemon.trainer.train", "--run-dir", str(run.path)]


def launcher_env(config: RunConfig, run: RunDir) -> dict[str, str]:
    env = dict(os.environ)
    env[layout.RUN_DIR_ENV] = str(run.path)
    if config.launch.python:
        env["PYTHONPATH"] = _joined(str(run.path / layout.PYTHON_PATH), env)
    env["OMP_NUM_THREADS"] = str(config.launch.threads_per_rank or 1)
    env["PYTHONUNBUFFERED"] = "1"  # rank output reaches the log as it happens
    env.pop(relay_protocol.SECRET_ENV, None)  # the relay's business, not the ranks'
    return env


def start_supervisor(run: RunDir) -> subprocess.Popen:
    """Start `python -m scalemon.run.supervise RUN_DIR` in its own session.

    The supervisor records its own pid and the launcher's in config.json: it is
    the only writer of the config once the run is launched.
    """
    with open(run.logs_dir / layout.SUPERVISOR_LOG, "ab") as log:
        try:
            return subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR_MODULE, str(run.path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        except OSError as error:
            raise LaunchError(f"cannot start the supervisor: {error.strerror}") from None


def request_stop(run: RunDir) -> bool:
    """Ask the supervisor to stop the run gracefully (ranks checkpoint and exit)."""
    try:
        pid = run.read_config().pids.get("supervisor")
    except RunDirError:
        return False
    if pid is None or not process_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True


def stop_and_wait(run: RunDir, timeout: float = 30.0) -> bool:
    """Stop a run gracefully; past `timeout`, kill the supervisor and every process under it.

    Ranks run in sessions of their own (torchrun starts them so), so killing a
    process group would miss them: the tree is walked instead. True when the
    graceful stop was enough.
    """
    import psutil

    try:
        pid = run.read_config().pids.get("supervisor")
    except RunDirError:
        return False
    request_stop(run)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not process_alive(pid):
        return True
    try:
        root = psutil.Process(pid)
        victims = [*root.children(recursive=True), root]
    except psutil.Error:
        return False
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(victims, timeout=10)
    return False


def torch_problem() -> str | None:
    """A one-line reason when torch cannot be found, without importing it."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return f"torch is not installed for {sys.executable}: pip install torch==2.13.0"
    return None
