"""Training data: a synthetic Markov stream with exactly known entropies, and token shards.

Batches are pure functions of (rank, step), so a resumed run sees the data it would have seen
and ranks never share a batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256
LLMC_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


class SyntheticMarkov:
    """Token stream: with probability ``alpha`` a fresh draw from a Zipf unigram p, otherwise
    one of the current token's ``successors`` fixed random followers, picked with weights w
    (the same w for every token). Followers are themselves drawn from p, so the stationary
    distribution π stays Zipf-like: a model first learns π (loss → H(π), the unigram entropy),
    then the followers (loss → the entropy rate).
    """

    def __init__(
        self,
        vocab: int,
        seed: int = 1337,
        alpha: float = 0.2,
        successors: int = 4,
        zipf_s: float = 1.1,
    ):
        if vocab < 2 or successors < 1 or not 0.0 < alpha <= 1.0 or zipf_s < 0:
            raise ValueError(
                f"bad SyntheticMarkov parameters: vocab={vocab} successors={successors} "
                f"alpha={alpha} zipf_s={zipf_s}"
            )
        self.vocab, self.seed, self.alpha = vocab, seed, alpha
        rng = np.random.default_rng([seed, 0x5CA1E])
        p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** zipf_s
        self.p = p / p.sum()
        w = 0.5 ** np.arange(successors, dtype=np.float64)
        self.w = w / w.sum()
        self.succ = rng.choice(vocab, size=(vocab, successors), p=self.p)
        self._cdf_p = np.cumsum(self.p)
        self._cdf_w = np.cumsum(self.w)
        self.pi = self._stationary()
        self._cdf_pi = np.cumsum(self.pi)
        self.unigram_entropy = _entropy(self.pi)
        self.entropy_rate = float(self.pi @ self._row_entropies())

    def _stationary(self) -> np.ndarray:
        # π = αp + (1−α)·πS is a contraction with rate 1−α (hence alpha > 0): iterate until
        # the step is far below float64 noise on any entry that matters.
        flat = self.succ.ravel()
        pi = self.p.copy()
        while True:
            flow = np.bincount(flat, weights=(pi[:, None] * self.w).ravel(), minlength=self.vocab)
            new = self.alpha * self.p + (1.0 - self.alpha) * flow
            new /= new.sum()
            if np.abs(new - pi).sum() < 1e-14:
                return new
            pi = new

    def _row_entropies(self) -> np.ndarray:
        # Row i is αp plus (1−α)·w on the successors. Start from the dense αp row's entropy,
        # then fix up only the (merged) successor entries: O(V·K), never O(V²).
        V, K = self.succ.shape
        a = self.alpha
        dense = -_xlogx(a * self.p).sum()
        keys = (np.arange(V)[:, None] * V + self.succ).ravel()
        uniq, inverse = np.unique(keys, return_inverse=True)
        mass = np.bincount(inverse, weights=np.tile(self.w, V))
        rows, cols = uniq // V, uniq % V
        base = a * self.p[cols]
        fix = _xlogx(base) - _xlogx(base + (1.0 - a) * mass)
        return dense + np.bincount(rows, weights=fix, minlength=V)

    def sample(self, rng: np.random.Generator, n_seq: int, length: int) -> np.ndarray:
        """``n_seq`` independent sequences of ``length`` tokens, each starting from π."""
        out = np.empty((n_seq, length), dtype=np.int64)
        u = rng.random((3, n_seq, length))
        fresh = np.minimum(np.searchsorted(self._cdf_p, u[0]), self.vocab - 1)
        pick = np.minimum(np.searchsorted(self._cdf_w, u[1]), len(self.w) - 1)
        use_fresh = u[2] < self.alpha
        cur = np.minimum(np.searchsorted(self._cdf_pi, u[0, :, 0]), self.vocab - 1)
        out[:, 0] = cur
        for t in range(1, length):
            cur = np.where(use_fresh[:, t], fresh[:, t], self.succ[cur, pick[:, t]])
            out[:, t] = cur
        return out

    def batch(
        self, rank: int, step: int, device_batch: int, seq_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, rank, step])
        seq = torch.from_numpy(self.sample(rng, device_batch, seq_len + 1))
        return seq[:, :-1], seq[:, 1:]


class TokenShards:
    """Pre-tokenized flat token files, memory-mapped.

    Accepts nanoGPT raw uint16 ``.bin``, llm.c ``.bin`` (256 int32 header, magic 20240520,
    version 1 = uint16 tokens, 2 = uint32) and 1-D integer ``.npy``; ``path`` is one file or a
    directory of them. In a directory holding names with "train" in them (train/val splits),
    only those are read.
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_dir():
            files = sorted(
                f for f in path.iterdir() if f.suffix in (".bin", ".npy") and f.is_file()
            )
            if any("train" in f.name for f in files):
                files = [f for f in files if "train" in f.name]
            if not files:
                raise ValueError(f"{path}: no .bin or .npy token shards in this directory")
        elif path.is_file():
            files = [path]
        else:
            raise ValueError(f"{path}: no such file or directory")
        self.path = path
        self.files = files
        self.shards = [_open_shard(f) for f in files]
        self.n_tokens = sum(len(s) for s in self.shards)
        self._vocab_size: int | None = None
        self._window_index: dict[int, np.ndarray] = {}

    @property
    def vocab_size(self) -> int:
        """Largest token id in the data plus one (one pass over the files, then cached)."""
        if self._vocab_size is None:
            chunk = 1 << 24
            top = max(
                int(s[i : i + chunk].max()) for s in self.shards for i in range(0, len(s), chunk)
            )
            self._vocab_size = top + 1
        return self._vocab_size

    def _windows(self, seq_len: int) -> np.ndarray:
        # Cumulative count of (seq_len + 1)-token windows per shard; windows never span files.
        if seq_len not in self._window_index:
            counts = [max(0, (len(s) - 1) // seq_len) for s in self.shards]
            if sum(counts) == 0:
                raise ValueError(
                    f"{self.path}: {self.n_tokens} tokens is too few for one sequence of "
                    f"{seq_len + 1}"
                )
            self._window_index[seq_len] = np.cumsum(counts)
        return self._window_index[seq_len]

    def batch(
        self, rank: int, world: int, step: int, device_batch: int, seq_len: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Consecutive windows in file order; at each step the ranks take interleaved ones, and
        the stream wraps around at the end of the data."""
        ends = self._windows(seq_len)
        rows = []
        for b in range(device_batch):
            w = ((step * device_batch + b) * world + rank) % int(ends[-1])
            shard = int(np.searchsorted(ends, w, side="right"))
            start = (w - (int(ends[shard - 1]) if shard else 0)) * seq_len
            rows.append(np.asarray(self.shards[shard][start : start + seq_len + 1], np.int64))
        seq = torch.from_numpy(np.stack(rows))
        return seq[:, :-1], seq[:, 1:]

    def estimate_unigram_entropy(self, sample_tokens: int = 1_000_000) -> float:
        """Plug-in entropy (nats) of the unigram counts of evenly spread slices of the data."""
        pieces = 64
        take = max(1, sample_tokens // (pieces * len(self.shards)))
        slices = [
            np.asarray(s[start : start + take], np.int64)
            for s in self.shards
            for start in np.linspace(0, max(0, len(s) - take), pieces, dtype=np.int64)
        ]
        counts = np.bincount(np.concatenate(slices))
        return _entropy(counts / counts.sum())


def _open_shard(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty token file")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ValueError(f"{path}: expected a 1-D integer array, got {arr.dtype}{arr.shape}")
        if len(arr) == 0:
            raise ValueError(f"{path}: empty token file")
        return arr
    if path.suffix != ".bin":
        raise ValueError(f"{path}: unknown token file type (expected .bin or .npy)")
    with open(path, "rb") as f:
        raw = f.read(4 * LLMC_HEADER_INTS)
    head = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<i4")
    if len(head) == LLMC_HEADER_INTS and head[0] == LLMC_MAGIC:
        version, n = int(head[1]), int(head[2])
        if version not in LLMC_DTYPES:
            raise ValueError(f"{path}: llm.c token file version {version} is not 1 or 2")
        dtype = LLMC_DTYPES[version]
        offset = 4 * LLMC_HEADER_INTS
        if n <= 0 or size < offset + n * dtype.itemsize:
            raise ValueError(
                f"{path}: llm.c header says {n} tokens but the file holds "
                f"{(size - offset) // dtype.itemsize}; truncated or corrupt"
            )
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(n,))
    if size % 2:
        raise ValueError(f"{path}: odd size {size} bytes; not raw uint16 tokens nor llm.c format")
    return np.memmap(path, dtype="<u2", mode="r")
