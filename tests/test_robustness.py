"""Runs that do what they say: strict checkpoints, atomic saves, errors naming the real cause,
one error once, CPU thread shares, top-k logging, tiny tiled inputs."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovrsis  # noqa: F401
import ovrsis.modeling  # noqa: F401
from detectron2.modeling import build_model

from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.checkpoint.checkpointer import atomic_torch_save
from ovrsis.engine import setup_cfg
from ovrsis.engine.launch import threads_per_process
from ovrsis.errors import CheckpointError, ConfigError, describe_user_error
from ovrsis.data import DatasetError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
SMALL = ["DATASETS.SYNTHETIC.NUM_TRAIN", "8", "DATASETS.SYNTHETIC.NUM_VAL", "2", "DATALOADER.NUM_WORKERS", "0"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def quick_model(tmp_path, *opts):
    cfg = setup_cfg(QUICKSTART, [*SMALL, "OUTPUT_DIR", str(tmp_path / "out"), *opts])
    torch.manual_seed(0)
    return cfg, build_model(cfg)


# ------------------------------------------------------------------ 1. checkpoints
def test_checkpoint_of_another_depth_is_an_error_naming_the_config_keys(tmp_path):
    _, two = quick_model(tmp_path)
    path = tmp_path / "two_layers.pth"
    torch.save({"model": two.state_dict()}, path)
    cfg3, three = quick_model(tmp_path, "MODEL.AGGREGATOR.NUM_LAYERS", "3")
    before = {k: v.clone() for k, v in three.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        OVRSISCheckpointer.from_config(cfg3, three).load(str(path))
    message = str(err.value)
    assert "missing" in message and "aggregator.layers.2" in message
    assert "MODEL.AGGREGATOR" in message and "MODEL.WEIGHTS_STRICT False" in message
    # nothing was half-loaded before the error
    assert all(torch.equal(before[k], v) for k, v in three.state_dict().items())


def test_partial_load_is_an_explicit_opt_in(tmp_path, caplog):
    _, two = quick_model(tmp_path)
    path = tmp_path / "two_layers.pth"
    torch.save({"model": two.state_dict()}, path)
    cfg3, three = quick_model(tmp_path, "MODEL.AGGREGATOR.NUM_LAYERS", "3", "MODEL.WEIGHTS_STRICT", "False")
    with caplog.at_level(logging.WARNING, logger="ovrsis"):
        OVRSISCheckpointer.from_config(cfg3, three).load(str(path))
    assert "MODEL.WEIGHTS_STRICT is False" in caplog.text and "aggregator.layers.2" in caplog.text
    shared = two.state_dict()
    assert torch.equal(three.state_dict()["decoder.head.weight"], shared["decoder.head.weight"])


def test_unknown_extra_keys_are_reported_not_hidden(tmp_path, caplog):
    cfg, model = quick_model(tmp_path, "MODEL.WEIGHTS_STRICT", "False")
    state = dict(model.state_dict())
    state["aggregator.mystery.weight"] = torch.zeros(3)
    state["something_else"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "extra.pth")
    with caplog.at_level(logging.INFO, logger="ovrsis"):
        OVRSISCheckpointer.from_config(cfg, model).load(str(tmp_path / "extra.pth"))
    assert "2 checkpoint keys unknown to the model" in caplog.text
    assert "aggregator.mystery.weight" in caplog.text and "no unknown key" not in caplog.text
    strict_cfg, strict_model = quick_model(tmp_path)
    with pytest.raises(CheckpointError, match="something_else"):
        OVRSISCheckpointer.from_config(strict_cfg, strict_model).load(str(tmp_path / "extra.pth"))


def test_frozen_encoder_loaded_from_its_own_file_is_not_missing(tmp_path):
    cfg, model = quick_model(tmp_path)
    model.clip.pretrained_from_file = True  # as a frozen stream that loaded its own weights marks itself
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("clip.")}
    torch.save({"model": state}, tmp_path / "no_clip.pth")
    OVRSISCheckpointer.from_config(cfg, model).load(str(tmp_path / "no_clip.pth"))


@pytest.mark.parametrize("cut", [0, 0.5])
def test_truncated_checkpoint_is_an_error_naming_file_and_size(tmp_path, cut):
    cfg, model = quick_model(tmp_path)
    full = tmp_path / "full.pth"
    torch.save({"model": model.state_dict()}, full)
    data = full.read_bytes()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError) as err:
        OVRSISCheckpointer.from_config(cfg, model).load(str(broken))
    assert str(broken) in str(err.value)
    assert ("0 bytes" in str(err.value)) if cut == 0 else (f"{int(len(data) * cut):,} bytes" in str(err.value))


def test_resume_skips_an_unreadable_last_checkpoint(tmp_path, caplog):
    cfg, model = quick_model(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    good = OVRSISCheckpointer(model, str(out))
    good.save("model_0000009", iteration=9)
    (out / "model_0000019.pth").write_bytes(b"\x80\x02truncated")
    good.tag_last_checkpoint("model_0000019.pth")
    _, fresh = quick_model(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ovrsis"):
        extra = OVRSISCheckpointer(fresh, str(out)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert "model_0000019.pth" in caplog.text and "skipping" in caplog.text
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())


def test_save_killed_midway_never_leaves_a_broken_checkpoint(tmp_path):
    """A child keeps re-saving a ~40 MB checkpoint; SIGKILL at several moments; the target
    file is always either absent or complete."""
    target = tmp_path / "model_final.pth"
    script = textwrap.dedent(f"""
        import torch, sys
        from ovrsis.checkpoint.checkpointer import atomic_torch_save
        state = {{"model": {{"w": torch.arange(10_000_000, dtype=torch.float32)}}}}
        print("ready", flush=True)
        while True:
            atomic_torch_save(state, {str(target)!r})
    """)
    for delay in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            loaded = torch.load(target, weights_only=True)
            assert loaded["model"]["w"].shape == (10_000_000,)
    names = [p.name for p in tmp_path.iterdir() if p.name.endswith(".pth")]
    assert names in ([], ["model_final.pth"])


def test_atomic_save_round_trips(tmp_path):
    atomic_torch_save({"a": torch.ones(2)}, str(tmp_path / "x.pth"))
    assert torch.equal(torch.load(tmp_path / "x.pth")["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["x.pth"]


# ------------------------------------------------------------------ 2. errors name the real cause
@pytest.mark.parametrize("key", ["DATASETS.TEST", "DATASETS.TRAIN"])
def test_unregistered_dataset_names_close_matches(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        setup_cfg(QUICKSTART, [key, "('synthetic_rs_vall',)"])
    assert "not registered" in str(err.value) and "'synthetic_rs_val'" in str(err.value)


def _register_opts(root: Path, **fields) -> list:
    entry = {"IMAGE_ROOT": str(root / "images"), "MASK_ROOT": str(root / "masks"), "CLASS_NAMES": ["a", "b"]}
    entry.update(fields)
    return ["DATASETS.REGISTER", str({"mine": entry}), "DATASETS.TEST", "('mine',)"]


def _tiny_dataset(root: Path, n: int = 2, size: int = 16) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((np.arange(size * size).reshape(size, size) % 2).astype(np.uint8)).save(root / "masks" / f"{i}.png")


def test_register_from_the_command_line(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    _tiny_dataset(tmp_path / "ds")
    cfg = setup_cfg(QUICKSTART, _register_opts(tmp_path / "ds"))
    assert MetadataCatalog.get("mine").stuff_classes == ["a", "b"]
    assert len(DatasetCatalog.get("mine")) == 2
    cfg = setup_cfg(QUICKSTART, [*_register_opts(tmp_path / "ds"), "DATASETS.REGISTER.mine.CLASS_NAMES", "[x, y]",
                                 "DATASETS.REGISTER.other.IMAGE_ROOT", str(tmp_path / "ds" / "images"),
                                 "DATASETS.REGISTER.other.MASK_ROOT", str(tmp_path / "ds" / "masks"),
                                 "DATASETS.REGISTER.other.CLASS_NAMES", "[c, d]"])
    assert MetadataCatalog.get("mine").stuff_classes == ["x", "y"]
    assert MetadataCatalog.get("other").stuff_classes == ["c", "d"]
    assert cfg.DATASETS.REGISTER.other.CLASS_NAMES == ["c", "d"]


def test_empty_class_names_say_empty_not_missing(tmp_path):
    _tiny_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError) as err:
        setup_cfg(QUICKSTART, _register_opts(tmp_path / "ds", CLASS_NAMES=[]))
    assert "CLASS_NAMES is empty" in str(err.value) and "missing" not in str(err.value)


def test_unknown_override_key_names_close_keys():
    with pytest.raises(ConfigError, match="MODEL.AGGREGATOR.NUM_LAYERS"):
        setup_cfg(QUICKSTART, ["MODEL.AGGREGATOR.NUM_LAYER", "3"])


@pytest.mark.parametrize("case", ["missing", "folder"])
def test_path_keys_name_key_path_and_expectation(tmp_path, case):
    path = tmp_path / "weights.pth"
    if case == "folder":
        path.mkdir()
    with pytest.raises(ConfigError) as err:
        setup_cfg(QUICKSTART, ["MODEL.WEIGHTS", str(path)])
    assert "MODEL.WEIGHTS" in str(err.value) and str(path) in str(err.value)
    assert ("is a folder" if case == "folder" else "does not exist") in str(err.value)
    cfg, _ = quick_model(tmp_path)
    with pytest.raises(ConfigError) as err:
        build_model(setup_cfg(QUICKSTART, [*SMALL, "MODEL.CLIP.PRETRAINED", str(path)]))
    assert "MODEL.CLIP.PRETRAINED" in str(err.value)
    assert ("is a folder" if case == "folder" else "does not exist") in str(err.value)


def test_dataset_folders_and_class_files_name_their_keys(tmp_path):
    _tiny_dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match=r"DATASETS.REGISTER.mine.CLASS_NAMES.*does not exist"):
        setup_cfg(QUICKSTART, _register_opts(tmp_path / "ds", CLASS_NAMES=str(tmp_path / "nope.txt")))
    cfg = setup_cfg(QUICKSTART, _register_opts(tmp_path / "ds", IMAGE_ROOT=str(tmp_path / "ds" / "images" / "0.png")))
    from detectron2.data import DatasetCatalog

    with pytest.raises(DatasetError, match=r"is a file, not a folder.*DATASETS.REGISTER.mine.IMAGE_ROOT"):
        DatasetCatalog.get("mine")


def test_training_sets_with_different_classes_say_what_to_do(tmp_path):
    from ovrsis.data import SemanticSegmentationMapper

    _tiny_dataset(tmp_path / "ds")
    cfg = setup_cfg(QUICKSTART, [*_register_opts(tmp_path / "ds"),
                                 "DATASETS.TRAIN", "('mine', 'synthetic_rs_train')"])
    with pytest.raises(ConfigError) as err:
        SemanticSegmentationMapper(cfg, True)
    assert "one vocabulary" in str(err.value) and "train on one of them" in str(err.value)


def test_dataloader_wrapped_user_error_keeps_only_the_message():
    wrapped = DatasetError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                           "call last):\n  File \"x.py\", line 1\novrsis.errors.DatasetError: cannot read image a.png")
    assert describe_user_error(wrapped) == "cannot read image a.png"
    assert describe_user_error(RuntimeError("bug")) is None


def test_one_bad_image_is_one_clear_error(tmp_path):
    """A corrupt training image with 2 DataLoader workers: one line, no traceback, exit 2."""
    _tiny_dataset(tmp_path / "ds", n=4)
    (tmp_path / "ds" / "images" / "2.png").write_bytes(b"not a png")
    proc = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", QUICKSTART, *_register_opts(tmp_path / "ds"),
         "DATASETS.TRAIN", "('mine',)", "DATALOADER.NUM_WORKERS", "2", "SOLVER.MAX_ITER", "20",
         "SOLVER.IMS_PER_BATCH", "4", "INPUT.CROP.SIZE", "(16, 16)", "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OVRSIS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert output.count("ovrsis: error:") == 1 and "2.png" in output
    assert "Traceback" not in output
    assert "\x1b[" not in output  # no colour codes when not a terminal


# ------------------------------------------------------------------ 4. CPU thread shares
def test_each_cpu_process_gets_its_share_of_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sys.modules["ovrsis.engine.launch"], "available_cpus", lambda: list(range(8)))
    assert [threads_per_process(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_process(2) == 3


# ------------------------------------------------------------------ 5. logs
def test_top_k_cap_is_logged_once_per_vocabulary(tmp_path, caplog):
    cfg, model = quick_model(tmp_path)
    model.eval()
    model.max_classes = 2
    model.set_vocabulary(["water", "tree", "road", "building"])
    x = {"image": torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)}
    with caplog.at_level(logging.INFO, logger="ovrsis"):
        model([x])
        model([x])
    assert caplog.text.count("exceed MODEL.COST.MAX_CLASSES=2") == 1


# ------------------------------------------------------------------ 6. tiled inference edge sizes
@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 2)])
def test_tiled_inference_with_long_side_on_tiny_and_thin_images(tmp_path, size):
    cfg, model = quick_model(tmp_path, "TEST.INFERENCE_MODE", "tiled", "TEST.TILED.LONG_SIDE", "64",
                             "TEST.TILED.TILE", "32", "TEST.TILED.STRIDE", "24")
    model.eval()
    model.set_vocabulary(["water", "road"])
    out = model([{"image": torch.randint(0, 255, (3, *size), dtype=torch.uint8)}])[0]["sem_seg"]
    assert out.shape == (2, *size) and torch.isfinite(out).all()


def test_training_a_training_free_model_says_so(tmp_path):
    from ovrsis.engine import Trainer

    class Frozen(torch.nn.Module):
        requires_weights = False

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    cfg = setup_cfg(QUICKSTART, SMALL)
    with pytest.raises(ConfigError, match="no trainable parameter.*--eval-only"):
        Trainer.build_optimizer(cfg, Frozen())
