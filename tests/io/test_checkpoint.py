import os

import pytest
import torch
import torch.distributed as dist

from scalemon.trainer import checkpoint
from scalemon.trainer.model import GPT, GPTConfig


def tiny():
    torch.manual_seed(0)
    model = GPT(GPTConfig(depth=1, vocab=64, seq_len=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 64, (2, 16))
    model(x, x).backward()
    opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_step_and_extra(tmp_path):
    model, opt = tiny()
    path = checkpoint.save(tmp_path, 7, model, opt, {"next_micro_batch": 8})
    assert path == tmp_path / "step-00000007.pt"
    assert checkpoint.latest(tmp_path) == path

    torch.manual_seed(1)
    other = GPT(GPTConfig(depth=1, vocab=64, seq_len=16))
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    step, extra = checkpoint.load(path, other, other_opt)
    assert (step, extra) == (7, {"next_micro_batch": 8})
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved = opt.state_dict()["state"][0]
    loaded = other_opt.state_dict()["state"][0]
    assert torch.equal(saved["exp_avg"], loaded["exp_avg"])
    assert int(loaded["step"]) == 1


def test_keeps_only_the_last_two_and_ignores_other_files(tmp_path):
    model, opt = tiny()
    assert checkpoint.latest(tmp_path / "missing") is None
    (tmp_path / ".step-00000099.pt.abc.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    for step in (9, 19, 29, 100):
        checkpoint.save(tmp_path, step, model, opt)
    names = sorted(p.name for p in tmp_path.glob("step-*.pt"))
    assert names == ["step-00000029.pt", "step-00000100.pt"]
    assert checkpoint.latest(tmp_path).name == "step-00000100.pt"


def test_a_failed_write_leaves_no_partial_file_and_keeps_the_old_ones(tmp_path, monkeypatch):
    model, opt = tiny()
    good = checkpoint.save(tmp_path, 1, model, opt)

    def fail(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 2, model, opt)
    assert sorted(os.listdir(tmp_path)) == [good.name]
    assert checkpoint.latest(tmp_path) == good
    assert checkpoint.load(good, model, opt)[0] == 1


def test_ddp_wrapper_is_unwrapped(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model, opt = tiny()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        path = checkpoint.save(tmp_path / "ckpt", 3, ddp, opt)
        keys = checkpoint.read(path)["model"].keys()
        assert keys == model.state_dict().keys()
        assert not any(k.startswith("module.") for k in keys)
        assert checkpoint.load(path, ddp, opt)[0] == 3
    finally:
        dist.destroy_process_group()
