"""Finding the model a script trains, and what can be read off it without guessing.

The model is the outermost module (one no other module holds) with parameters that train:
a DDP, a torch.compile wrapper or the plain model, whichever the script calls. It is looked
for once the script trains (its first backward, its first optimizer step), among the live
objects, so any script is covered however it builds its model.

Facts come only from where a model says them: vocab from `config.vocab_size` (or `vocab`,
`n_vocab`), depth from `config.n_layer` (or `depth`, `num_hidden_layers`), parameters by
counting them. A fact not found is said as not found (`unknown`), never guessed.
"""

from __future__ import annotations

import gc
import warnings
from typing import Any

VOCAB_KEYS = ("vocab_size", "vocab", "n_vocab")
DEPTH_KEYS = ("n_layer", "depth", "num_hidden_layers", "n_layers")
DIM_KEYS = ("n_embd", "d_model", "hidden_size", "dim")
HEAD_KEYS = ("n_head", "num_attention_heads", "n_heads")


def inner(module: Any) -> Any:
    """The model under its wrappers (DDP's .module, torch.compile's ._orig_mod)."""
    for _ in range(8):
        wrapped = getattr(module, "_orig_mod", None)
        if wrapped is None:
            wrapped = getattr(module, "module", None)
        if wrapped is None or not hasattr(wrapped, "parameters"):
            return module
        module = wrapped
    return module


def trained_roots(params: set[int] | None = None) -> list[Any]:
    """The live outermost modules with parameters that train (among `params`, by id, when
    given: an optimizer's)."""
    import torch

    with warnings.catch_warnings():  # isinstance on some of torch's objects warns
        warnings.simplefilter("ignore")
        modules = [obj for obj in gc.get_objects() if isinstance(obj, torch.nn.Module)]
    held = {id(child) for module in modules for child in module.children()}
    roots = []
    for module in modules:
        if id(module) in held:
            continue
        for p in module.parameters():
            if p.requires_grad and not p.is_meta and (params is None or id(p) in params):
                roots.append(module)
                break
    return roots


def _config_value(model: Any, keys: tuple[str, ...]) -> int | None:
    for holder in (getattr(model, "config", None), model):
        for key in keys:
            value = getattr(holder, key, None) if holder is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def facts(roots: list[Any]) -> dict[str, Any]:
    """What the start record's meta gains: the model's class, parameters and their bytes,
    vocab and depth where the model says them, and what could not be found."""
    seen: dict[int, Any] = {}
    for root in roots:
        for p in root.parameters():
            seen.setdefault(id(p), p)
    models = [inner(root) for root in roots]
    out: dict[str, Any] = {
        "model": ", ".join(sorted({type(m).__name__ for m in models})) or None,
        "n_params": sum(p.numel() for p in seen.values()),
        "param_bytes": sum(p.numel() * p.element_size() for p in seen.values()),
    }
    unknown = []
    for name, keys in (("vocab", VOCAB_KEYS), ("depth", DEPTH_KEYS)):
        values = {v for v in (_config_value(m, keys) for m in models) if v}
        if len(values) == 1:
            out[name] = values.pop()
        else:
            unknown.append(f"{name} (no config.{keys[0]} on the model)" if not values else
                           f"{name} (the models disagree)")
    for name, keys in (("dim", DIM_KEYS), ("n_head", HEAD_KEYS)):  # said when known
        values = {v for v in (_config_value(m, keys) for m in models) if v}
        if len(values) == 1:
            out[name] = values.pop()
    if "vocab" in out:  # the input embedding, and nanochat's value embeddings
        out["embedding_tables"] = _embedding_tables(models, out["vocab"])
    first = next(iter(seen.values()), None)
    if first is not None:
        out["device"] = first.device.type
    if unknown:
        out["unknown"] = "; ".join(unknown)
    return out


def _embedding_tables(models: list[Any], vocab: int) -> int:
    """Embedding tables with a row per token (a padded vocab counts too)."""
    import torch

    tables = {id(m) for root in models for m in root.modules()
              if isinstance(m, torch.nn.Embedding) and vocab <= m.num_embeddings < vocab + 128}
    return len(tables)


def loss_of(output: Any) -> Any:
    """The scalar loss a forward returned (itself, `.loss`, ["loss"], or the one scalar of a
    tuple such as nanoGPT's `logits, loss`), detached; None when there is no single one."""
    import torch

    def scalar(value: Any) -> bool:
        return isinstance(value, torch.Tensor) and value.numel() == 1 and \
            value.is_floating_point()

    candidates: list[Any] = []
    if scalar(output):
        candidates = [output]
    elif isinstance(getattr(output, "loss", None), torch.Tensor):
        candidates = [output.loss]
    elif isinstance(output, dict) and "loss" in output:
        candidates = [output["loss"]]
    elif isinstance(output, tuple | list):
        candidates = [value for value in output if scalar(value)]
    if len(candidates) != 1 or not scalar(candidates[0]):
        return None
    return candidates[0].detach()


def token_ids(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A forward's input of token ids: its first argument (or `input_ids`/`idx`) when that is
    a tensor of integers; None otherwise."""
    import torch

    value = args[0] if args else kwargs.get("input_ids", kwargs.get("idx"))
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and \
            not value.is_complex() and value.dtype != torch.bool:
        return value
    return None
