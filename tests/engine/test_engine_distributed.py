"""Work that only rank 0 does (checkpoints, the output directory, config.json) stops every
rank when it fails on rank 0, instead of leaving the others at a barrier until the
process-group timeout. Two gloo processes, as in tests/evaluation/test_distributed.py."""
import datetime
import json
import multiprocessing
from types import SimpleNamespace

import torch

from detect.engine import hooks
from detect.distributed import on_main_process
from detect.engine.hooks import CheckpointHook
from detect.engine.trainer import Trainer

TIMEOUT_S = 30  # the process-group timeout: what the other rank would wait without the fix


def full_disk(path, payload):
    raise OSError(28, "No space left on device")


def worker(rank, store, out_dir):
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                                         timeout=datetime.timedelta(seconds=TIMEOUT_S))
    outcome = {}
    try:
        ran = []
        on_main_process(lambda: ran.append(rank), "to do nothing")  # success: every rank goes on
        outcome["ran"] = ran
        hooks.save_checkpoint = full_disk  # in this forked child only
        hook = CheckpointHook(out_dir / "run")
        hook.trainer = SimpleNamespace(gather_rng=Trainer.gather_rng, checkpoint_payload=lambda rng: {},
                                       iteration=3, logger=None)
        try:
            hook._save()
            outcome["error"] = None
        except Exception as err:
            outcome["error"] = f"{type(err).__name__}: {err}"
    finally:
        torch.distributed.destroy_process_group()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(outcome))


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=worker, args=(r, tmp_path / "store", tmp_path)) for r in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=3 * TIMEOUT_S)
    assert [p.exitcode for p in processes] == [0, 0]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert rank0["ran"] == [0] and rank1["ran"] == []
    assert rank0["error"] == "OSError: [Errno 28] No space left on device"
    # Rank 1 was told by rank 0: its error names rank 0's failure, which only rank 0's broadcast
    # carries. Left waiting in a collective it would instead get the process group's own error
    # (a timed-out wait, or gloo's closed connection once rank 0 has left), naming none of this.
    assert rank1["error"] == (f"MainProcessError: rank 0 failed to write the checkpoint {tmp_path / 'run' / 'last.pth'}: "
                              "OSError: [Errno 28] No space left on device")
