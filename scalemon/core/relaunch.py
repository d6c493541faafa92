"""The `scalemon run` command that launches what a running training command line launches
(pure: command lines in, a command out), for `scalemon attach` to suggest: the same ranks,
script and arguments, with the probe injected.

It reads torch's launcher (`torchrun ...`, `python -m torch.distributed.run ...`) or a plain
`python [-m MODULE | SCRIPT] ARGS`; anything else gives None.
"""

from __future__ import annotations

import posixpath
import shlex

LAUNCHER_MODULES = ("torch.distributed.run", "torch.distributed.launch")
# torchrun's options that take no value; every other option takes one (or is `--opt=value`).
LAUNCHER_FLAGS = {"--standalone", "--no-python", "--no_python", "--run-path", "--run_path",
                  "-m", "--module", "--virtual-local-rank", "--virtual_local_rank"}
# torchrun's options that `scalemon run` takes too, under its own names.
KEPT = {"nproc-per-node": "--nproc-per-node", "nproc_per_node": "--nproc-per-node",
        "nnodes": "--nnodes", "node-rank": "--node-rank", "node_rank": "--node-rank",
        "master-addr": "--master-addr", "master_addr": "--master-addr",
        "master-port": "--master-port", "master_port": "--master-port"}
PYTHON_FLAGS = {"-u", "-B", "-O", "-OO", "-s", "-S", "-E", "-I", "-q", "-b", "-bb", "-P"}


def _is_python(arg: str) -> bool:
    return posixpath.basename(arg).startswith("python")


def _launcher_args(cmdline: list[str]) -> list[str] | None:
    """The arguments after torch's launcher, or None when the command is not it."""
    for i, arg in enumerate(cmdline[:4]):
        if posixpath.basename(arg) == "torchrun":
            return cmdline[i + 1:]
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] in LAUNCHER_MODULES:
            return cmdline[i + 2:]
    return None


def _target(args: list[str], module: bool) -> list[str] | None:
    """`-m MODULE ARGS` or `SCRIPT ARGS` from what follows the interpreter's or launcher's
    own options."""
    if not args:
        return None
    return ["-m", *args] if module else list(args)


def scalemon_command(cmdline: list[str], own_python: str) -> str | None:
    """The `scalemon run ... -- TARGET` for a command line; `--python` when its interpreter is
    not `own_python` (scalemon's)."""
    if not cmdline:
        return None
    python = cmdline[0] if _is_python(cmdline[0]) else None
    options: list[str] = []
    launched = _launcher_args(cmdline)
    if launched is not None:
        module, i = False, 0
        while i < len(launched) and launched[i].startswith("-"):
            arg = launched[i]
            name, equals, value = arg.lstrip("-").partition("=")
            if arg in ("-m", "--module"):
                module = True
            elif arg not in LAUNCHER_FLAGS and not equals:
                value = launched[i + 1] if i + 1 < len(launched) else ""
                i += 1
            if name in KEPT and value:
                options += [KEPT[name], value]
            i += 1
        target = _target(launched[i:], module)
        if "--nproc-per-node" not in options:
            options += ["--nproc-per-node", "1"]
    elif python is not None:
        args, module = cmdline[1:], False
        while args and args[0] in PYTHON_FLAGS:
            args = args[1:]
        if args[:1] == ["-m"]:
            args, module = args[1:], True
        elif args[:1] and args[0].startswith("-"):
            return None  # `python -c ...` and the like: nothing to relaunch
        target = _target(args, module)
        options = ["--nproc-per-node", "1"]
    else:
        return None
    if target is None:
        return None
    if python is not None and python != own_python:
        options += ["--python", python]
    return shlex.join(["scalemon", "run", *options, "--", *target])
