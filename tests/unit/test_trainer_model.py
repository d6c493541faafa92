import math

import pytest
import torch

from scalemon.trainer.model import (
    GPT,
    GPTConfig,
    count_parameters,
    count_parameters_meta,
    expected_parameters,
)

# The checked table in DESIGN.md: N = 12·dim²·depth + 2·vocab·dim with dim = 64·depth.
TABLE = {4: 36_700_160, 8: 92_274_688, 12: 185_597_952, 20: 560_988_160}


@pytest.mark.parametrize("depth", sorted(TABLE))
def test_meta_parameter_count_matches_the_formula(depth):
    assert expected_parameters(depth, 65536) == TABLE[depth]
    assert count_parameters_meta(depth, vocab=65536) == TABLE[depth]


def test_small_vocab_model_count_is_exact_on_a_real_module():
    model = GPT(GPTConfig(depth=2, vocab=512, seq_len=64))
    assert count_parameters(model) == expected_parameters(2, 512) == 12 * 128**2 * 2 + 2 * 512 * 128
    assert count_parameters_meta(2, vocab=512, seq_len=64) == count_parameters(model)


def test_no_biases_norm_weights_or_buffers_in_the_state_dict():
    model = GPT(GPTConfig(depth=1, vocab=256, seq_len=32))
    assert all(name.endswith(".weight") for name in model.state_dict())
    assert not any("norm" in name for name in model.state_dict())


@pytest.mark.parametrize(("depth", "heads"), [(1, 1), (2, 1), (4, 2), (7, 2), (12, 6)])
def test_head_count(depth, heads):
    cfg = GPTConfig(depth)
    assert cfg.n_head == heads
    assert cfg.dim % cfg.n_head == 0


def test_forward_shapes_and_initial_loss_is_ln_vocab():
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=2, vocab=256, seq_len=64))
    x = torch.randint(0, 256, (3, 64))
    assert model(x).shape == (3, 64, 256)
    assert model(x[:, :10]).shape == (3, 10, 256)
    loss = model(x, torch.randint(0, 256, (3, 64)))
    assert loss.dim() == 0
    assert abs(loss.item() - math.log(256)) < 0.3


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=1, vocab=128, seq_len=16))
    torch.nn.init.normal_(model.lm_head.weight, std=0.1)
    torch.nn.init.normal_(model.blocks[0].attn.c_proj.weight, std=0.1)
    x = torch.randint(0, 128, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 128
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_too_long_sequence_is_rejected():
    model = GPT(GPTConfig(depth=1, vocab=64, seq_len=8))
    with pytest.raises(ValueError, match="longer than seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        GPTConfig(depth=0)
    with pytest.raises(ValueError, match="even"):
        GPTConfig(depth=1, aspect_ratio=3, head_dim=3)
