"""evaluate() under torch.distributed: two gloo processes, each with half of the images
(and one image on both ranks, as a padding DistributedSampler does), give rank 0 the
metrics of a single process that saw every image once; the other rank gets {}."""
import json
import math
import multiprocessing

import torch

from detect.evaluation import build_evaluator
from evaluation_data import IMAGE_IDS, FakeDataset, make_coco_dict, make_predictions

SHARDS = [[11, 12, 15, 20], [21, 30, 31, 11]]
MASKS = {i: torch.randint(0, 4, (6, 5), generator=torch.Generator().manual_seed(i)) for i in IMAGE_IDS}


def evaluate_all(image_ids_per_call):
    data = FakeDataset(make_coco_dict())
    predictions = make_predictions(data.coco_dict)
    metrics = {}
    for metric in ("coco", "voc07_11pt", "voc_area", "miou"):
        ev = build_evaluator(metric, data)
        for image_id in image_ids_per_call:
            target = {"image_id": image_id, "masks": MASKS[image_id]}
            output = dict(predictions[image_id], sem_seg=(MASKS[image_id] + image_id) % 4)
            ev.process([target], [output])
        metrics.update(ev.evaluate())
    return metrics


def worker(rank, store, out_dir):
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        metrics = evaluate_all(SHARDS[rank])
    finally:
        torch.distributed.destroy_process_group()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(metrics, f)


def test_two_ranks_equal_one_process(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=worker, args=(r, tmp_path / "store", tmp_path)) for r in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    single = evaluate_all(IMAGE_IDS)
    assert rank1 == {}
    assert rank0.keys() == single.keys() and {"bbox/AP", "bbox/AP50", "sem_seg/mIoU"} <= single.keys()
    for key, value in single.items():
        assert (math.isnan(value) and math.isnan(rank0[key])) or rank0[key] == value, key
