"""The scaling model: parameters, FLOPs, speed, gradient sync and horizons.

Pure arithmetic, no I/O and no torch. `plan`, the ETA panel, the what-if rows and
the regime alerts all use these functions, so the numbers agree everywhere.
The checked figures they must reproduce are in DESIGN.md ("Checked facts").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_VOCAB = 65_536
DEFAULT_ASPECT_RATIO = 64  # nanochat: model dim = 64 * depth
DEFAULT_HEAD_DIM = 128
DEFAULT_SEQ_LEN = 2048
SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True)
class ModelShape:
    """A nanochat-shaped GPT: untied embedding and head, MLP 4x, no biases."""

    depth: int
    vocab: int = DEFAULT_VOCAB
    aspect_ratio: int = DEFAULT_ASPECT_RATIO
    head_dim: int = DEFAULT_HEAD_DIM
    # Upstream nanochat (2026) adds a vocab x dim value embedding to every other layer:
    # parameters 6N counts, lookups the matmul-exact FLOPs do not.
    value_embeddings: bool = False

    def __post_init__(self) -> None:
        for field in ("depth", "vocab", "aspect_ratio", "head_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")

    @property
    def dim(self) -> int:
        return self.aspect_ratio * self.depth

    @property
    def n_head(self) -> int:
        return max(1, self.dim // self.head_dim)

    @property
    def value_embedding_layers(self) -> int:
        """nanochat's layers with a value embedding: the last and every second one before."""
        return (self.depth + 1) // 2 if self.value_embeddings else 0


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # input embedding + output head (+ value embeddings): vocab x dim each
    body: int  # attention (4 d^2) and MLP (8 d^2) per layer
    lookup: int  # embeddings read by index, not multiplied: the input's and the values'

    @property
    def embedding_share(self) -> float:
        return self.embedding / self.total


def param_count(shape: ModelShape) -> ParamCount:
    """N = 12·dim²·depth + 2·vocab·dim (DESIGN.md), plus nanochat's value embeddings."""
    body = 12 * shape.dim**2 * shape.depth
    lookup = (1 + shape.value_embedding_layers) * shape.vocab * shape.dim
    embedding = lookup + shape.vocab * shape.dim
    return ParamCount(total=body + embedding, embedding=embedding, body=body, lookup=lookup)


def flops_per_token_6n(shape: ModelShape, seq_len: int = DEFAULT_SEQ_LEN) -> float:
    """The textbook 6N training FLOPs per token (2N forward, 4N backward).

    seq_len is unused; it is accepted so both estimates share one signature.
    """
    return 6.0 * param_count(shape).total


def flops_per_token_exact(shape: ModelShape, seq_len: int = DEFAULT_SEQ_LEN) -> float:
    """Matmul-exact FLOPs per token: 6·(N − vocab·dim) + 12·depth·dim·T.

    The input embedding (and nanochat's value embeddings) are lookups, not matmuls, so they
    are left out; attention scores and the weighted sum add 12·L·d·T (nanochat estimates the
    same way).
    """
    count = param_count(shape)
    matmul_params = count.total - count.lookup
    return 6.0 * matmul_params + 12.0 * shape.depth * shape.dim * seq_len


FLOPS_MODELS = {"6N": flops_per_token_6n, "exact": flops_per_token_exact}


@dataclass(frozen=True)
class DevicePreset:
    key: str
    label: str
    peak_bf16: float  # dense FLOP/s, no sparsity
    peak_fp32: float  # FLOP/s without tensor cores
    source: str


ADA_WHITEPAPER = "NVIDIA Ada Lovelace GPU architecture whitepaper (appendix tables)"

# Dense peak numbers from the vendors' datasheets (sparsity doubles are not used).
DEVICES: dict[str, DevicePreset] = {
    preset.key: preset
    for preset in (
        # NVIDIA H100 SXM5 datasheet: BF16 1,979 TFLOPS with sparsity -> 989.4 dense; FP32 67.
        DevicePreset("h100", "H100 SXM", 989.4e12, 67e12, "NVIDIA H100 Tensor Core GPU datasheet"),
        # NVIDIA H200 datasheet: same Hopper compute as H100 SXM (more, faster memory).
        DevicePreset("h200", "H200 SXM", 989.4e12, 67e12, "NVIDIA H200 Tensor Core GPU datasheet"),
        # NVIDIA A100 datasheet: BF16 312 TFLOPS dense (624 sparse); FP32 19.5.
        DevicePreset("a100", "A100 SXM", 312e12, 19.5e12, "NVIDIA A100 Tensor Core GPU datasheet"),
        # AMD Instinct MI300X datasheet: BF16 1,307.4 TFLOPS dense; FP32 (vector) 163.4.
        DevicePreset("mi300x", "MI300X", 1307.4e12, 163.4e12, "AMD Instinct MI300X datasheet"),
        # NVIDIA Ada whitepaper, RTX 4090: BF16 tensor with FP32 accumulate 165.2 dense; FP32 82.6.
        DevicePreset("rtx4090", "RTX 4090", 165.2e12, 82.6e12, ADA_WHITEPAPER),
        # NVIDIA Ada whitepaper, RTX 4070 (46 SMs, 2.475 GHz boost): BF16 FP32-acc 58.3; FP32 29.1.
        DevicePreset("rtx4070", "RTX 4070", 58.3e12, 29.1e12, ADA_WHITEPAPER),
    )
}


def device_preset(key: str) -> DevicePreset:
    try:
        return DEVICES[key.lower().replace(" ", "").replace("-", "")]
    except KeyError:
        known = ", ".join(DEVICES)
        raise ValueError(f"unknown device {key!r} (known: {known})") from None


def peak_flops(device: DevicePreset, dtype: str = "bf16") -> float:
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"dtype must be bf16 or fp32, got {dtype!r}")
    return device.peak_bf16 if dtype == "bf16" else device.peak_fp32


def tok_s_from_reference(
    ref_tok_s: float,
    ref_shape: ModelShape,
    shape: ModelShape,
    flops_model: str = "exact",
    seq_len: int = DEFAULT_SEQ_LEN,
) -> float:
    """Scale a measured throughput by the ratio of FLOPs per token (compute-bound)."""
    flops = FLOPS_MODELS[flops_model]
    return ref_tok_s * flops(ref_shape, seq_len) / flops(shape, seq_len)


def tok_s_from_device(
    peak: float, mfu: float, shape: ModelShape, flops_model: str = "exact",
    seq_len: int = DEFAULT_SEQ_LEN,
) -> float:
    """Throughput at an assumed model FLOPs utilisation of a device's peak."""
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU must be in (0, 1], got {mfu}")
    return peak * mfu / FLOPS_MODELS[flops_model](shape, seq_len)


def mfu(tok_s: float, shape: ModelShape, peak: float, seq_len: int = DEFAULT_SEQ_LEN) -> float:
    """Model FLOPs utilisation of a measured throughput (matmul-exact FLOPs)."""
    return tok_s * flops_per_token_exact(shape, seq_len) / peak


GRAD_DTYPE_BYTES = {"fp32": 4, "bf16": 2}


def grad_bytes(shape: ModelShape, dtype: str = "fp32") -> int:
    """Bytes of gradients all-reduced each optimizer step (every parameter)."""
    return param_count(shape).total * GRAD_DTYPE_BYTES[dtype]


def ring_allreduce_seconds(
    nbytes: float, nodes: int, bandwidth_bit_s: float, latency_s: float = 0.0
) -> float:
    """Ring allreduce: each rank sends 2·(n−1)/n · bytes, in 2·(n−1) latency-bound hops."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    if nodes == 1:
        return 0.0
    hops = 2 * (nodes - 1)
    payload_bits = hops / nodes * nbytes * 8
    return hops * latency_s + payload_bits / bandwidth_bit_s


def sync_share(compute_s: float, sync_s: float) -> float:
    """Share of a step spent in sync when none of it overlaps compute (the worst case)."""
    total = compute_s + sync_s
    return sync_s / total if total > 0 else 0.0


def accumulation_for_sync_share(micro_compute_s: float, sync_s: float, target: float) -> int:
    """Micro-steps per allreduce that bring the sync share under `target`.

    With k micro-steps the step costs k·c compute and one allreduce a:
    a / (k·c + a) ≤ target  ⇔  k ≥ a·(1 − target) / (target·c).
    """
    if not 0 < target < 1:
        raise ValueError(f"target share must be in (0, 1), got {target}")
    if sync_s <= 0:
        return 1
    if micro_compute_s <= 0:
        raise ValueError("micro-step compute time must be positive")
    return max(1, math.ceil(sync_s * (1 - target) / (target * micro_compute_s)))


# The optimizer's work a step, for scaling its measured time to other shapes. AdamW is a few
# elementwise operations a parameter; Muon (nanochat's matrices) adds Newton–Schulz
# iterations, each X·Xᵀ, (X·Xᵀ)² and a product back onto X: 4·m²·n + 2·m³ FLOPs for an
# m×n matrix (m ≤ n).
ADAMW_FLOPS_PER_PARAM = 12
MUON_NS_STEPS = 5


def optimizer_flops(shape: ModelShape, muon: bool) -> float:
    """FLOPs of one optimizer step over the whole model (before any sharding over ranks)."""
    params = param_count(shape)
    if not muon:
        return float(ADAMW_FLOPS_PER_PARAM * params.total)
    d = shape.dim
    square = 4 * d**3 + 2 * d**3  # attention's q, k, v, o: d×d
    wide = 4 * d * d * (4 * d) + 2 * d**3  # the MLP's d×4d and 4d×d
    per_layer = MUON_NS_STEPS * (4 * square + 2 * wide)
    return float(shape.depth * per_layer + ADAMW_FLOPS_PER_PARAM * params.total)


def horizon_seconds(step_s: float, steps: int) -> float:
    return step_s * steps


def cost(seconds: float, price_per_hour: float, machines: int = 1) -> float:
    """Cost of `machines` machines (or GPUs) for `seconds` at a price per machine-hour."""
    return seconds / 3600 * price_per_hour * machines


def steps_for_tokens_per_param(shape: ModelShape, ratio: float, tokens_per_step: int) -> int:
    """Chinchilla-style horizon: steps = ratio·N / tokens per step (rounded up)."""
    return max(1, math.ceil(ratio * param_count(shape).total / tokens_per_step))
