import math

import numpy as np
import pytest
import torch

from scalemon.trainer.data import LLMC_MAGIC, SyntheticMarkov, TokenShards


def dense_transition(d: SyntheticMarkov) -> np.ndarray:
    P = d.alpha * np.tile(d.p, (d.vocab, 1))
    for k, w in enumerate(d.w):
        np.add.at(P, (np.arange(d.vocab), d.succ[:, k]), (1 - d.alpha) * w)
    return P


@pytest.mark.parametrize(
    ("vocab", "alpha", "successors"), [(40, 0.2, 4), (12, 0.05, 6), (30, 1.0, 2)]
)
def test_exact_statistics_match_the_dense_chain(vocab, alpha, successors):
    # Small vocabularies make successors collide within a row; the O(V·K) path must merge them.
    d = SyntheticMarkov(vocab, seed=7, alpha=alpha, successors=successors)
    P = dense_transition(d)
    assert np.allclose(P.sum(1), 1.0)
    assert np.allclose(d.pi @ P, d.pi, atol=1e-13)
    assert math.isclose(d.pi.sum(), 1.0, abs_tol=1e-12)
    row_h = -(P * np.log(np.where(P > 0, P, 1.0))).sum(1)
    assert math.isclose(d.entropy_rate, d.pi @ row_h, abs_tol=1e-12)
    assert math.isclose(d.unigram_entropy, -(d.pi * np.log(d.pi)).sum(), abs_tol=1e-12)
    assert d.entropy_rate <= d.unigram_entropy + 1e-12 < math.log(vocab)
    if alpha < 1:
        assert d.entropy_rate < d.unigram_entropy - 0.1


def test_long_sample_matches_exact_unigram_and_conditional_entropy():
    d = SyntheticMarkov(64, seed=3)
    tokens = d.sample(np.random.default_rng(0), 64, 5000)
    freq = np.bincount(tokens.ravel(), minlength=64) / tokens.size
    assert 0.5 * np.abs(freq - d.pi).sum() < 0.01
    pairs = np.bincount((tokens[:, :-1] * 64 + tokens[:, 1:]).ravel(), minlength=64 * 64)
    joint = pairs.reshape(64, 64) / pairs.sum()
    marginal = joint.sum(1)
    nz = joint > 0
    conditional = -(
        joint[nz] * np.log(joint[nz] / np.broadcast_to(marginal[:, None], joint.shape)[nz])
    ).sum()
    assert abs(conditional - d.entropy_rate) < 0.02
    unigram = -(freq[freq > 0] * np.log(freq[freq > 0])).sum()
    assert abs(unigram - d.unigram_entropy) < 0.01


def test_batches_are_deterministic_per_rank_and_step():
    d = SyntheticMarkov(256, seed=1)
    x, y = d.batch(rank=0, step=5, device_batch=4, seq_len=32)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    again = SyntheticMarkov(256, seed=1).batch(0, 5, 4, 32)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    assert not torch.equal(x, d.batch(1, 5, 4, 32)[0])
    assert not torch.equal(x, d.batch(0, 6, 4, 32)[0])
    assert not torch.equal(x, SyntheticMarkov(256, seed=2).batch(0, 5, 4, 32)[0])


def test_full_vocab_defaults():
    d = SyntheticMarkov(65536)
    assert 0 < d.entropy_rate < d.unigram_entropy < math.log(65536)
    x, _ = d.batch(0, 0, 1, 512)
    assert x.shape == (1, 512) and x.min() >= 0 and x.max() < 65536


def test_bad_parameters_are_rejected():
    for kwargs in ({"vocab": 1}, {"vocab": 10, "alpha": 0.0}, {"vocab": 10, "successors": 0}):
        with pytest.raises(ValueError):
            SyntheticMarkov(**kwargs)


# --- token shards -----------------------------------------------------------------------------


def write_llmc(path, tokens, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = LLMC_MAGIC, version, len(tokens) if count is None else count
    dtype = "<u2" if version == 1 else "<u4"
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype=dtype).tobytes())
    return path


@pytest.mark.parametrize("kind", ["raw", "llmc1", "llmc2", "npy"])
def test_shard_formats_read_the_same_tokens(tmp_path, kind):
    tokens = np.arange(1000) % 300 + (70000 if kind == "llmc2" else 0)
    if kind == "raw":
        path = tmp_path / "train.bin"
        path.write_bytes(tokens.astype("<u2").tobytes())
    elif kind == "npy":
        path = tmp_path / "tokens.npy"
        np.save(path, tokens.astype(np.int32))
    else:
        path = write_llmc(tmp_path / "shard.bin", tokens, version=int(kind[-1]))
    shards = TokenShards(path)
    assert shards.n_tokens == 1000
    assert shards.vocab_size == tokens.max() + 1
    x, y = shards.batch(rank=0, world=1, step=0, device_batch=2, seq_len=10)
    assert x.dtype == torch.long
    assert x.tolist() == [tokens[0:10].tolist(), tokens[10:20].tolist()]
    assert y.tolist() == [tokens[1:11].tolist(), tokens[11:21].tolist()]


def test_shard_batches_are_rank_disjoint_deterministic_and_wrap(tmp_path):
    tokens = np.arange(20_000, dtype=np.uint16)
    write_llmc(tmp_path / "data_train_000.bin", tokens[:9000])
    write_llmc(tmp_path / "data_train_001.bin", tokens[9000:])
    write_llmc(tmp_path / "data_val_000.bin", np.full(5000, 7, dtype=np.uint16))
    shards = TokenShards(tmp_path)
    assert [f.name for f in shards.files] == ["data_train_000.bin", "data_train_001.bin"]
    seen = set()
    for step in range(3):
        for rank in range(2):
            x, y = shards.batch(rank, 2, step, 4, 100)
            assert torch.equal(x[:, 1:], y[:, :-1])
            assert torch.all(x[:, 1:] - x[:, :-1] == 1)  # windows never span two shards
            starts = {int(v) for v in x[:, 0]}
            assert not starts & seen
            seen |= starts
            assert torch.equal(x, TokenShards(tmp_path).batch(rank, 2, step, 4, 100)[0])
    windows = 89 + 109  # (n - 1) // seq_len per shard
    assert torch.equal(shards.batch(0, 1, 0, 1, 100)[0], shards.batch(0, 1, windows, 1, 100)[0])


def test_unigram_entropy_estimate(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "train.bin"
    path.write_bytes(rng.integers(0, 256, 200_000).astype("<u2").tobytes())
    assert abs(TokenShards(path).estimate_unigram_entropy(100_000) - math.log(256)) < 0.01


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: (p / "e.bin").write_bytes(b""), "empty"),
        (lambda p: (p / "odd.bin").write_bytes(b"abc"), "odd size"),
        (lambda p: write_llmc(p / "v.bin", [1, 2, 3], version=3), "version 3"),
        (lambda p: write_llmc(p / "t.bin", [1, 2, 3], count=10), "truncated"),
        (lambda p: (p / "x.txt").write_text("hello"), "unknown token file type"),
        (lambda p: (p / "f.npy").write_bytes(b"not numpy at all"), "not a readable .npy"),
        (lambda p: np.save(p / "g.npy", np.zeros(5)), "1-D integer"),
    ],
)
def test_bad_shard_files_raise_clear_errors(tmp_path, setup, message):
    setup(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(ValueError, match=message):
        TokenShards(path)


def test_missing_or_empty_paths_and_too_little_data(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        TokenShards(tmp_path / "nope")
    with pytest.raises(ValueError, match="no .bin or .npy"):
        TokenShards(tmp_path)
    path = tmp_path / "small.bin"
    path.write_bytes(np.arange(5, dtype="<u2").tobytes())
    with pytest.raises(ValueError, match="too few"):
        TokenShards(path).batch(0, 1, 0, 1, 10)
