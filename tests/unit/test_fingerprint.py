"""The batch fingerprint: equal for equal token ids, different for another batch or order,
and not taken where reading the batch would wait on a device or it holds no token ids."""

import torch

from scalemon.probes.step.fingerprint import FINGERPRINT_TOKENS, batch_fingerprint


def test_equal_batches_match_and_others_do_not():
    batch = torch.randint(0, 65_536, (4, 512), generator=torch.Generator().manual_seed(0))
    assert batch_fingerprint(batch) == batch_fingerprint(batch.clone())
    assert batch_fingerprint(batch) != batch_fingerprint(batch.flip(1))  # same ids, other order
    other = batch.clone()
    other[0, 0] += 1
    assert batch_fingerprint(batch) != batch_fingerprint(other)
    assert 0 <= batch_fingerprint(batch) < 2**63


def test_only_the_first_tokens_are_read():
    batch = torch.zeros(2 * FINGERPRINT_TOKENS, dtype=torch.long)
    later = batch.clone()
    later[-1] = 5
    assert batch_fingerprint(batch) == batch_fingerprint(later)


def test_no_fingerprint_of_floats_empty_batches_or_other_things():
    assert batch_fingerprint(torch.rand(8)) is None
    assert batch_fingerprint(torch.zeros(0, dtype=torch.long)) is None
    assert batch_fingerprint([1, 2, 3]) is None
    assert batch_fingerprint(torch.ones(3, dtype=torch.int32)) == 1 + 2 + 3
