"""A nanochat-shaped GPT: untied embedding and head, ReLU² MLP, weightless RMSNorm, rotary.

Nothing here carries a bias, a norm weight or a learned position, so the parameter count is
exactly ``12·dim²·depth + 2·vocab·dim`` (the formula scalemon's model math uses).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

# nanochat caps logits with tanh; it keeps early training stable at high learning rates.
LOGIT_SOFTCAP = 15.0


@dataclass(frozen=True)
class GPTConfig:
    depth: int
    vocab: int = 65536
    seq_len: int = 512
    aspect_ratio: int = 64
    head_dim: int = 128

    @property
    def dim(self) -> int:
        return self.aspect_ratio * self.depth

    @property
    def n_head(self) -> int:
        # dim // head_dim, lowered until it divides dim (only odd depths need that); the head
        # count changes no parameter count.
        n = max(1, self.dim // self.head_dim)
        while self.dim % n:
            n -= 1
        return n

    def __post_init__(self) -> None:
        if min(self.depth, self.vocab, self.seq_len, self.aspect_ratio, self.head_dim) < 1:
            raise ValueError(f"GPTConfig fields must be positive: {self}")
        if (self.dim // self.n_head) % 2:
            raise ValueError(f"head size {self.dim // self.n_head} must be even for rotary")


def expected_parameters(depth: int, vocab: int = 65536, aspect_ratio: int = 64) -> int:
    dim = aspect_ratio * depth
    return 12 * dim * dim * depth + 2 * vocab * dim


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.c_k = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.c_v = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.c_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        shape = (B, T, self.n_head, C // self.n_head)
        q = self.c_q(x).view(shape)
        k = self.c_k(x).view(shape)
        v = self.c_v(x).view(shape)
        # Rotary, then QK norm as nanochat does; both are parameter-free. Under bf16 autocast
        # the fp32 tables (and a norm run in fp32) would promote q, k; SDPA wants one dtype.
        cos, sin = cos.to(v.dtype), sin.to(v.dtype)
        q = rms_norm(apply_rotary(q, cos, sin)).to(v.dtype)
        k = rms_norm(apply_rotary(k, cos, sin)).to(v.dtype)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.dim, 4 * cfg.dim, bias=False)
        self.c_proj = nn.Linear(4 * cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    # Buffers registered in __init__ (torch's Module.__getattr__ would type them Tensor | Module).
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        cos, sin = self._rotary_tables(cfg.seq_len, cfg.dim // cfg.n_head)
        # Not persistent: derived from the config, so checkpoints hold only parameters.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @staticmethod
    def _rotary_tables(seq_len: int, head_size: int, base: float = 10000.0):
        inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        # Shaped (1, T, 1, head_size/2) to broadcast over (B, T, n_head, head_size/2).
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

    @torch.no_grad()
    def init_weights(self) -> None:
        # nanochat: unit-std embedding (it is RMS-normed right away), fan-in scaled matrices,
        # zeroed output projections and head so the initial loss is exactly ln(vocab).
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                std = min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in)
                nn.init.normal_(module.weight, mean=0.0, std=std)
        for block in cast(Iterable[Block], self.blocks):  # a ModuleList yields plain Modules
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        nn.init.zeros_(self.lm_head.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                raw: bool = False) -> torch.Tensor:
        """The loss against `targets`, else the logits (`raw`: the lm_head's output, before
        the loss head's softcap)."""
        n = idx.size(1)
        if n > self.cfg.seq_len:
            raise ValueError(f"sequence of {n} tokens is longer than seq_len {self.cfg.seq_len}")
        cos, sin = self.cos[:, :n], self.sin[:, :n]
        x = rms_norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(rms_norm(x))
        if raw:
            return logits
        if targets is None:
            return softcap(logits)
        return head_loss(logits, targets)


def softcap(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def head_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss head: softcap and cross-entropy over the vocab, elementwise work on every
    logit that no FLOPs count sees (the trainer times it apart, for `plan --from-run`)."""
    capped = softcap(logits)
    return F.cross_entropy(capped.view(-1, capped.size(-1)), targets.reshape(-1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_parameters_meta(
    depth: int, vocab: int = 65536, seq_len: int = 512, aspect_ratio: int = 64, head_dim: int = 128
) -> int:
    """Parameters of the real module, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = GPT(GPTConfig(depth, vocab, seq_len, aspect_ratio, head_dim))
    return count_parameters(model)
