"""Where the injected probe listens: torch's own extension points, patched before the script
runs, each reporting to the Driver.

- optimizer steps: torch.optim's global step pre/post hooks (every optimizer, however many);
- backward: torch.autograd.backward (what `loss.backward()` calls), synced or not as the
  script's DDP says (`no_sync()` and `require_backward_grad_sync` set the same flag);
- forward: a pre/post hook on the model's outermost module (models.trained_roots), looked
  for when an optimizer is built, at the first backward and at each optimizer's first step;
  only forwards with gradients on count (an evaluation under no_grad is not a step);
- data: a torch DataLoader's iterator (other loaders' time is the step's "other");
- checkpoints: torch.save, once a step has been made (one record a step, however many
  files);
- DDP: the step probe's comm hook on the first DDP built; a hook the script registers itself
  is timed inside it (probe.sync_with);
- collectives the script calls: scalemon.probes.inject.collectives.
"""

from __future__ import annotations

import functools
import time
import weakref
from typing import Any

from scalemon.probes.inject import models
from scalemon.probes.inject.collectives import Collectives, quiet
from scalemon.probes.inject.driver import Driver, say
from scalemon.probes.inject.replacing import Replacements


class Patches:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.replaced = Replacements()
        self.collectives = Collectives(driver, self.replaced)
        self.roots: list[Any] = []  # hooked modules, strongly held: the script holds them too
        self._hooked: set[int] = set()
        self._ddps: list[weakref.ref[Any]] = []
        self._timed_ddp: weakref.ref[Any] | None = None
        self._searched: set[int] = set()  # optimizers (by id) whose models were looked for
        self._calls: list[bool] = []  # per hooked forward in progress: does it count?
        self.saw_tokens = False
        self.seq_len: int | None = None  # the first batch's last dimension
        self.optimizers: list[str] = []  # class names, as they were built
        self.saw_loss = False

    def install(self) -> None:
        import torch
        import torch.optim.optimizer as optim

        keep, replace = self.replaced.keep, self.replaced.replace
        keep(optim.register_optimizer_step_pre_hook(self._optimizer_pre).remove)
        keep(optim.register_optimizer_step_post_hook(self._optimizer_post).remove)
        self._patch_optimizer_init(optim.Optimizer)
        replace(torch.autograd, "backward", self._backward(torch.autograd.backward))
        self._patch_ddp()
        self._patch_dataloader()
        replace(torch, "save", self._save(torch.save))
        self.collectives.install()
        driver = self.driver
        driver.synced = self._synced
        driver.describe = self._describe
        driver.closed = lambda steps: self.collectives.forget_before(steps - 1)

    def uninstall(self) -> None:
        """torch as it was, but for DDP's comm hook registration (a DDP cannot drop its
        hook: it syncs on, untimed, or runs the script's own hook inside it)."""
        self.replaced.restore()
        self.roots = []

    # --- optimizer and backward -----------------------------------------------------------

    def _patch_optimizer_init(self, base: Any) -> None:
        """An optimizer built: its model is looked for now, so the first step's forward is
        timed too (every optimizer calls the base class's __init__)."""
        init = base.__init__

        @functools.wraps(init)
        def optimizer_init(optimizer: Any, *args: Any, **kwargs: Any) -> None:
            init(optimizer, *args, **kwargs)
            if self.driver.on and id(optimizer) not in self._searched:
                self._search(optimizer)

        self.replaced.replace(base, "__init__", optimizer_init)

    def _search(self, optimizer: Any) -> None:
        self._searched.add(id(optimizer))
        name = type(optimizer).__name__
        if name not in self.optimizers:
            self.optimizers.append(name)
        params = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._find_models(params)

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if id(optimizer) not in self._searched and self.driver.on:
            self._search(optimizer)
        self.driver.optimizer_started()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.driver.optimizer_ended()

    def _backward(self, original: Any) -> Any:
        driver = self.driver

        @functools.wraps(original)
        def backward(*args: Any, **kwargs: Any) -> Any:
            if not driver.on:
                return original(*args, **kwargs)
            if not self._searched:
                self._searched.add(0)  # the first backward: the model trains by now
                self._find_models(None)
            driver.backward_started()
            try:
                return original(*args, **kwargs)
            finally:
                driver.backward_ended()

        return backward

    def _synced(self) -> bool | None:
        """Whether this backward syncs gradients: None without DDP."""
        ddps = [ddp for ref in self._ddps if (ddp := ref()) is not None]
        if not ddps:
            return None
        return any(getattr(ddp, "require_backward_grad_sync", True) for ddp in ddps)

    # --- the model's forward --------------------------------------------------------------

    def _find_models(self, params: set[int] | None) -> None:
        try:
            roots = models.trained_roots(params)
        except Exception as error:  # noqa: BLE001 - no forward timing, but training goes on
            say(f"could not look for the model ({type(error).__name__}: {error})")
            return
        for root in roots:
            self._hook(root)

    def _hook(self, module: Any) -> None:
        import torch

        if id(module) in self._hooked:
            return
        self._hooked.add(id(module))
        self.roots.append(module)
        calls, driver = self._calls, self.driver

        def pre(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            counts = not calls and torch.is_grad_enabled() and driver.on
            calls.append(counts)
            if counts:
                ids = models.token_ids(args, kwargs)
                if ids is not None and not self.saw_tokens:
                    self.saw_tokens, self.seq_len = True, int(ids.shape[-1])
                driver.forward_started(ids)

        def post(mod: Any, args: tuple[Any, ...], output: Any) -> None:
            if calls and calls.pop():
                loss = models.loss_of(output)
                self.saw_loss = self.saw_loss or loss is not None
                driver.forward_ended(loss)

        # Not traced by torch.compile when the module is compiled after it was hooked.
        keep = self.replaced.keep
        keep(module.register_forward_pre_hook(torch.compiler.disable(pre),
                                              with_kwargs=True).remove)
        keep(module.register_forward_hook(torch.compiler.disable(post), always_call=True).remove)

    # --- DDP ------------------------------------------------------------------------------

    def _patch_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        init, register, builtin = DDP.__init__, DDP.register_comm_hook, \
            DDP._register_builtin_comm_hook

        @functools.wraps(init)
        def ddp_init(ddp: Any, *args: Any, **kwargs: Any) -> None:
            init(ddp, *args, **kwargs)
            self._ddp_built(ddp)

        @functools.wraps(register)
        def register_comm_hook(ddp: Any, state: Any, hook: Any) -> None:
            # DDP takes one comm hook: on the DDP the probe's hook is on, the script's own
            # (or a probe of its own, once the injected one stood down) runs inside it.
            if self._timed_ddp is None or self._timed_ddp() is not ddp:
                return register(ddp, state, hook)

            def scripts_hook(bucket: Any) -> Any:
                with quiet():  # its collectives are DDP's sync, not the script's own
                    return hook(state, bucket)

            self.driver.probe.sync_with(scripts_hook)
            return None

        @functools.wraps(builtin)
        def register_builtin_comm_hook(ddp: Any, comm_hook_type: Any) -> None:
            if self._timed_ddp is None or self._timed_ddp() is not ddp:
                return builtin(ddp, comm_hook_type)
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            hook = {"ALLREDUCE": default_hooks.allreduce_hook,
                    "FP16_COMPRESS": default_hooks.fp16_compress_hook}[comm_hook_type.name]
            return register_comm_hook(ddp, getattr(ddp, "process_group", None), hook)

        self.replaced.replace(DDP, "__init__", ddp_init)
        # Kept when the probe stands down: the DDP it hooked takes no second hook, so a hook
        # registered later must still run inside the probe's.
        setattr(DDP, "register_comm_hook", register_comm_hook)  # noqa: B010
        setattr(DDP, "_register_builtin_comm_hook", register_builtin_comm_hook)  # noqa: B010

    def _ddp_built(self, ddp: Any) -> None:
        self._ddps.append(weakref.ref(ddp))
        if not self.driver.on:
            return
        self._hook(ddp)
        if self._timed_ddp is None:  # one comm hook to time; a second DDP's sync is untimed
            self.driver.probe.attach_ddp(ddp)
            self._timed_ddp = weakref.ref(ddp)

    # --- data -----------------------------------------------------------------------------

    def _patch_dataloader(self) -> None:
        import torch
        from torch.utils.data import dataloader

        iterator = dataloader._BaseDataLoaderIter
        original, driver = iterator.__next__, self.driver

        @functools.wraps(original)
        def next_batch(it: Any) -> Any:
            if not driver.on or not torch.is_grad_enabled():
                return original(it)
            start = time.perf_counter()
            batch = original(it)
            driver.batch_fetched(start, time.perf_counter() - start)
            return batch

        self.replaced.replace(iterator, "__next__", next_batch)

    # --- checkpoints ----------------------------------------------------------------------

    def _save(self, original: Any) -> Any:
        driver = self.driver

        @functools.wraps(original)
        def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = original(obj, f, *args, **kwargs)
            driver.saved(f, time.perf_counter() - start)
            return result

        return save

    # --- facts ----------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        import torch.distributed as dist

        out: dict[str, Any] = models.facts(self.roots) if self.roots else \
            {"unknown": "the model"}
        grouped = dist.is_available() and dist.is_initialized()
        out["process_group"] = str(dist.get_backend()) if grouped else "none"
        out["ddp"] = self._timed_ddp is not None
        if self.optimizers:
            out["optimizer"] = ", ".join(self.optimizers)
        if self.seq_len:
            out["seq_len"] = self.seq_len
        missing = [out.pop("unknown")] if "unknown" in out else []
        if not self.saw_tokens:
            missing.append("tokens (the model's first input is not token ids)")
        if not self.saw_loss:
            missing.append("loss (the model's forward returns no single scalar)")
        if missing:
            out["unknown"] = "; ".join(missing)
        return out
