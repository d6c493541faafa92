"""Reading a failed run's stderr: the failing rank's own lines, not torchrun's report."""

from scalemon.core.launcherlog import RankFailure, first_failure, missing_module, rank_error_lines

STDERR = """\
[rank1]: Traceback (most recent call last):
[rank1]:   File "/tmp/fails.py", line 14, in <module>
[rank1]:     raise RuntimeError('boom: rank 1 at step 5')
[rank1]: RuntimeError: boom: rank 1 at step 5
[rank0]: Traceback (most recent call last):
[rank0]:   File "/tmp/fails.py", line 16, in <module>
[rank0]: RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:4504.
W1124 15:33:17.390000 20350 site-packages/torch/distributed/elastic/api.py:1028] Sending SIGTERM
E1124 15:33:17.410000 20350 site-packages/torch/distributed/elastic/api.py:1002] failed (exit 1)
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File ".venv/lib/python3.11/site-packages/torch/distributed/run.py", line 1019, in run
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
scalemon.trainer.train FAILED
------------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-24_15:33:17
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 20363)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-24_15:33:17
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 20364){signal}
  error_file: <N/A>
============================================================
"""


def test_the_failing_ranks_lines_and_the_root_cause():
    text = STDERR.format(code=1, signal="")
    assert first_failure(text) == RankFailure(rank=1, exit_code=1, signal=None)
    assert rank_error_lines(text, 2) == [
        "[rank1]:     raise RuntimeError('boom: rank 1 at step 5')",
        "[rank1]: RuntimeError: boom: rank 1 at step 5",
        "(torchrun: rank 1 failed first, exit code 1)"]


def test_a_rank_killed_by_a_signal():
    text = STDERR.format(code=-9, signal="  (SIGKILL)")
    assert first_failure(text) == RankFailure(rank=1, exit_code=137, signal="SIGKILL")
    assert rank_error_lines(text, 8)[-1] == "(torchrun: rank 1 failed first, killed by SIGKILL)"


def test_plain_stderr_is_its_own_tail():
    text = "loading\n\nsomething odd\nValueError: bad shard\n"
    assert first_failure(text) is None
    assert rank_error_lines(text, 2) == ["something odd", "ValueError: bad shard"]
    assert rank_error_lines("", 5) == []


def test_a_module_a_rank_could_not_import_is_named():
    text = ("[rank0]:   File \"train.py\", line 3, in <module>\n"
            "[rank0]: ModuleNotFoundError: No module named 'wandb'\n")
    assert missing_module(text) == "wandb"
    assert missing_module("RuntimeError: boom\n") is None
