"""Metrics against hand-computed numbers, and the evaluator end to end (1 and 2 processes)."""
from __future__ import annotations

import json
import math
import socket
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import ovrsis  # noqa: F401  (before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog

from ovrsis.evaluation import (
    METRICS_FILE,
    OpenVocabSemSegEvaluator,
    confusion_matrix,
    format_copypaste,
    segmentation_metrics,
)

CLASSES = ["a", "b", "c", "d"]
IGNORE = 255
# (gt, pred) per pixel. Class c is absent from GT but predicted twice; d is absent from
# both; the three ignore pixels (one predicted as d) must not count.
PIXELS = (
    [(0, 0)] * 4 + [(0, 1), (0, 2)]
    + [(1, 1)] * 2 + [(1, 0), (1, 2)]
    + [(IGNORE, 0), (IGNORE, 1), (IGNORE, 3)]
)
# rows = GT, cols = prediction
EXPECTED_CONF = np.array([[4, 1, 1, 0], [1, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
# By hand: GT a=6, b=4; Pred a=5, b=3, c=2, d=0; TP a=4, b=2.
# IoU a = 4/(6+5-4) = 4/7, IoU b = 2/(4+3-2) = 2/5, c and d undefined (no GT).
# mIoU = (4/7 + 2/5) / 2 = 17/35 (c is excluded although predicted).
# ACC a = 4/6, b = 2/4; mACC = (2/3 + 1/2) / 2 = 7/12.
# fwIoU = 6/10 * 4/7 + 4/10 * 2/5 = 88/175; pACC = 6/10.
# Seen {a, c}: s = 4/7 (c undefined). Unseen {b, d}: u = 2/5. h = 2su/(s+u) = 8/17.
EXPECTED = {
    "IoU-a": 100 * 4 / 7, "IoU-b": 40.0, "ACC-a": 100 * 2 / 3, "ACC-b": 50.0,
    "mIoU": 100 * 17 / 35, "mACC": 100 * 7 / 12, "fwIoU": 100 * 88 / 175, "pACC": 60.0,
    "s-mIoU": 100 * 4 / 7, "u-mIoU": 40.0, "h-mIoU": 100 * 8 / 17,
}
SEEN, UNSEEN = ["a", "c"], ["b", "d"]


def _arrays(pixels, shape):
    gt, pred = zip(*pixels)
    return np.array(pred).reshape(shape), np.array(gt).reshape(shape)


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-9)


# ---------------------------------------------------------------- metrics


def test_confusion_matrix_rows_are_gt_and_ignore_dropped():
    pred, gt = _arrays(PIXELS, (13,))
    conf = confusion_matrix(pred, gt, 4, IGNORE)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, EXPECTED_CONF)


def test_metrics_hand_computed():
    res = segmentation_metrics(EXPECTED_CONF, CLASSES, SEEN, UNSEEN)
    for key, value in EXPECTED.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key
    for key in ("IoU-c", "ACC-c", "IoU-d", "ACC-d"):
        assert math.isnan(res[key]), key
    assert list(res)[:7] == ["mIoU", "fwIoU", "mACC", "pACC", "s-mIoU", "u-mIoU", "h-mIoU"]


def test_no_split_means_no_seen_unseen_keys():
    res = segmentation_metrics(EXPECTED_CONF, CLASSES)
    assert not {"s-mIoU", "u-mIoU", "h-mIoU"} & set(res)


def test_h_miou_zero_and_nan():
    swapped = np.array([[0, 1], [1, 0]])  # every pixel wrong: s = u = 0
    assert segmentation_metrics(swapped, ["x", "y"], ["x"], ["y"])["h-mIoU"] == 0.0
    no_unseen_gt = np.array([[3, 0], [0, 0]])
    res = segmentation_metrics(no_unseen_gt, ["x", "y"], ["x"], ["y"])
    assert res["s-mIoU"] == 100.0 and math.isnan(res["u-mIoU"]) and math.isnan(res["h-mIoU"])


@pytest.mark.parametrize(
    "seen, unseen, match",
    [(["a"], None, "both"), (["a"], ["zz"], "zz"), (["a", "b"], ["b"], "both seen and unseen")],
)
def test_bad_split_raises(seen, unseen, match):
    with pytest.raises(ValueError, match=match):
        segmentation_metrics(EXPECTED_CONF, CLASSES, seen, unseen)


def test_out_of_range_labels_raise():
    gt = np.array([[0, 7], [IGNORE, -1]])
    with pytest.raises(ValueError, match=r"ground truth.*-1, 7"):
        confusion_matrix(np.zeros((2, 2), int), gt, 4, IGNORE)
    with pytest.raises(ValueError, match=r"prediction.*: 4 "):
        confusion_matrix(np.array([[0, 4], [1, 1]]), np.zeros((2, 2), int), 4, IGNORE)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 4, IGNORE)


def test_format_copypaste():
    lines = format_copypaste({"mIoU": 1.0, "IoU-a": 2.0, "mACC": float("nan")})
    assert lines == ["copypaste: mIoU,mACC", "copypaste: 1.0000,nan"]


# ---------------------------------------------------------------- evaluator


def _register(tmp_path, split=True):
    """Two PNG masks (8 and 5 pixels) that together hold PIXELS; returns name and I/O."""
    name = f"test_eval_{uuid.uuid4().hex[:8]}"
    samples = []
    for i, (chunk, shape) in enumerate([(PIXELS[:8], (2, 4)), (PIXELS[8:], (1, 5))]):
        pred, gt = _arrays(chunk, shape)
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(gt.astype(np.uint8)).save(path)
        scores = torch.nn.functional.one_hot(torch.from_numpy(pred), 4).permute(2, 0, 1).float()
        samples.append(({"file_name": path, "sem_seg_file_name": path}, {"sem_seg": scores}))
    DatasetCatalog.register(name, lambda: [s[0] for s in samples])
    meta = {"seen_classes": SEEN, "unseen_classes": UNSEEN} if split else {}
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, ignore_label=IGNORE, **meta)
    return name, samples


def test_evaluator_end_to_end(tmp_path):
    name, samples = _register(tmp_path)
    evaluator = OpenVocabSemSegEvaluator(name, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    for inp, out in samples:
        evaluator.process([inp], [out])
    res = evaluator.evaluate()["sem_seg"]
    for key, value in EXPECTED.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key
    assert math.isnan(res["IoU-c"])

    saved = json.loads((tmp_path / "out" / METRICS_FILE).read_text())
    assert saved["dataset"] == name
    assert saved["metrics"]["IoU-c"] is None and saved["metrics"]["ACC-d"] is None
    assert saved["metrics"]["h-mIoU"] == pytest.approx(EXPECTED["h-mIoU"])
    assert saved["confusion_matrix_gt_rows"] == EXPECTED_CONF.tolist()


def test_evaluator_without_split_and_shape_mismatch(tmp_path):
    name, samples = _register(tmp_path, split=False)
    evaluator = OpenVocabSemSegEvaluator(name, distributed=False)
    evaluator.process([samples[0][0]], [samples[0][1]])
    assert "h-mIoU" not in evaluator.evaluate()["sem_seg"]
    with pytest.raises(ValueError, match="0.png"):
        evaluator.process([samples[0][0]], [samples[1][1]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, name, samples, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        evaluator = OpenVocabSemSegEvaluator(name, distributed=True)
        evaluator.process([samples[rank][0]], [samples[rank][1]])
        result = evaluator.evaluate()
        (out_dir / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_single_process(tmp_path):
    name, samples = _register(tmp_path)
    single = OpenVocabSemSegEvaluator(name, distributed=False)
    for inp, out in samples:
        single.process([inp], [out])
    expected = single.evaluate()["sem_seg"]

    # fork: children inherit the registered dataset and skip re-importing torch/detectron2.
    mp.start_processes(
        _worker, args=(_free_port(), name, samples, tmp_path), nprocs=2, start_method="fork"
    )
    assert json.loads((tmp_path / "rank1.json").read_text()) is None
    gathered = json.loads((tmp_path / "rank0.json").read_text())["sem_seg"]
    assert gathered.keys() == expected.keys()
    assert all(_same(gathered[k], expected[k]) for k in expected)
