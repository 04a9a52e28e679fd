"""Training loop behaviour: loss falls, resume is exact, CPU DDP keeps replicas equal, eval-only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ovrsis  # noqa: F401
from detectron2.utils import comm

import ovrsis.modeling  # noqa: F401
from ovrsis.engine import Trainer, launch, setup_cfg, unwrap

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def tiny_opts(out: Path, max_iter: int, **extra) -> list:
    opts = {
        "OUTPUT_DIR": str(out), "SOLVER.MAX_ITER": max_iter, "SOLVER.IMS_PER_BATCH": 4,
        "SOLVER.CHECKPOINT_PERIOD": 10 ** 6, "TEST.EVAL_PERIOD": 0, "DATALOADER.NUM_WORKERS": 0,
        "DATASETS.SYNTHETIC.NUM_TRAIN": 16, "DATASETS.SYNTHETIC.NUM_VAL": 4, "INPUT.CROP.SIZE": (96, 96),
        "SOLVER.WARMUP_ITERS": 2, "SOLVER.WARMUP_FACTOR": 0.1,
    }
    opts.update(extra)
    return [str(x) for kv in opts.items() for x in kv]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def test_training_loss_falls(tmp_path):
    cfg = setup_cfg(QUICKSTART, tiny_opts(tmp_path, 160, **{"SOLVER.WARMUP_ITERS": 0}))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    with open(tmp_path / "metrics.json") as f:
        losses = [r["total_loss"] for r in map(json.loads, f) if "total_loss" in r]
    assert len(losses) >= 3
    assert losses[-1] < 0.75 * losses[0], losses


def test_resume_restores_optimizer_and_lr(tmp_path):
    """Train 6 iterations, stop after 3, resume: optimizer state, lr and schedule continue exactly."""
    full = Trainer(setup_cfg(QUICKSTART, tiny_opts(tmp_path / "full", 6)))
    full.resume_or_load(resume=False)
    full.train()

    part_dir = tmp_path / "part"
    first = Trainer(setup_cfg(QUICKSTART, tiny_opts(part_dir, 6, **{"SOLVER.CHECKPOINT_PERIOD": 3})))
    first.resume_or_load(resume=False)
    first.max_iter = 3  # "interrupted" after iteration 3 (checkpoint model_0000002.pth)
    first.train()
    ckpt = torch.load(part_dir / "model_0000002.pth", weights_only=False)["trainer"]
    assert "optimizer" in ckpt and ckpt["optimizer"]["state"], "optimizer state must be saved"

    resumed = Trainer(setup_cfg(QUICKSTART, tiny_opts(part_dir, 6, **{"SOLVER.CHECKPOINT_PERIOD": 3})))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    saved_lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(saved_lrs)
    assert saved_lrs[0] != pytest.approx(resumed.cfg.SOLVER.BASE_LR * resumed.cfg.SOLVER.WARMUP_FACTOR)
    state = resumed.optimizer.state_dict()["state"]
    for key, value in ckpt["optimizer"]["state"].items():
        assert torch.equal(state[key]["exp_avg"], value["exp_avg"])
    resumed.train()
    assert resumed.iter == full.iter
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(
        [g["lr"] for g in full.optimizer.param_groups])


def test_seed_makes_cpu_training_reproducible(tmp_path):
    weights = []
    for run in ("a", "b"):
        trainer = Trainer(setup_cfg(QUICKSTART, tiny_opts(tmp_path / run, 3)))
        trainer.resume_or_load(resume=False)
        trainer.train()
        weights.append(trainer.model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def _ddp_worker(out_dir: str) -> None:
    cfg = setup_cfg(QUICKSTART, tiny_opts(Path(out_dir), 4, **{"SOLVER.IMS_PER_BATCH": 4}))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in unwrap(trainer.model).parameters()])
    gathered = comm.all_gather(flat)
    if comm.is_main_process():
        same = all(torch.equal(gathered[0], g) for g in gathered[1:])
        moved = not torch.equal(flat, torch.zeros_like(flat))
        Path(out_dir, "ddp_result.json").write_text(json.dumps({"world": len(gathered), "same": same, "moved": moved}))


def test_two_process_cpu_ddp_keeps_replicas_identical(tmp_path):
    launch(_ddp_worker, 2, args=(str(tmp_path),))
    result = json.loads((tmp_path / "ddp_result.json").read_text())
    assert result == {"world": 2, "same": True, "moved": True}


def test_eval_only_from_checkpoint(tmp_path):
    """train_net.py --eval-only on a saved checkpoint reproduces the in-process evaluation."""
    cfg = setup_cfg(QUICKSTART, tiny_opts(tmp_path / "train", 5))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    expected = Trainer.test(cfg, trainer.model)["sem_seg"]
    weights = tmp_path / "train" / "model_final.pth"
    env = dict(os.environ, OVRSIS_CACHE=os.environ["OVRSIS_CACHE"])
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_net.py"), "--config-file", QUICKSTART, "--eval-only",
         *tiny_opts(tmp_path / "eval", 5), "MODEL.WEIGHTS", str(weights)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "inference" / "synthetic_rs_val" / "sem_seg_metrics.json").read_text())
    got = metrics["metrics"] if "metrics" in metrics else metrics
    assert got["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-6)
    assert "h-mIoU" in proc.stdout + proc.stderr
