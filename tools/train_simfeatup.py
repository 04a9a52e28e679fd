#!/usr/bin/env python
"""Train SimFeatUp for a frozen CLIP on any image folder (SegEarth-OV: Million-AID test split).

    python tools/train_simfeatup.py --images data/Million-AID/test --output output/simfeatup/xclip_jbu_one.ckpt
    python tools/train_simfeatup.py --images IMGS --config-file configs/segearth_ov/base.yaml \\
        --steps 2000 --batch 8 MODEL.CLIP.ARCH ViT-B-32-quickgelu     # a /32 backbone: 5 doubling steps

The CLIP backbone is the config's (``MODEL.CLIP.*``; default ``configs/segearth_ov/base.yaml``:
OpenAI ViT-B/16). Random 224 crops (reflect-padded when smaller), ImageNet normalisation (as
SimFeatUp), 5 jitters, random projection to 30 dims, uncertainty-weighted reconstruction +
0.1 × image reconstruction, NAdam lr 1e-3, batch 8, one epoch unless ``--steps``. The checkpoint
has the official layout (``state_dict`` of ``upsampler.*`` keys) and loads with
``MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS``. The logged loss is negative by design (log-uncertainty term).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import ovrsis  # noqa: F401  (CPU process defaults before torch, compat shims before detectron2)
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ovrsis.engine import setup_cfg
from ovrsis.engine.cli import parse_args_with_overrides  # noqa: E402
from ovrsis.modeling.encoders.clip import CLIPEncoder
from ovrsis.training_free.simfeatup import simfeatup_checkpoint
from ovrsis.training_free.simfeatup_train import IMAGENET_MEAN, IMAGENET_STD, SimFeatUpTraining, build_optimizer

logger = logging.getLogger("ovrsis.simfeatup")
SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "segearth_ov" / "base.yaml")


class ImageFolder(Dataset):
    """Every image under ``root`` (recursively), as RGB random crops, normalised."""

    def __init__(self, root: str, size: int = 224) -> None:
        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"--images {root}: no image files ({', '.join(SUFFIXES)}) found")
        self.transform = T.Compose([T.RandomCrop(size, pad_if_needed=True, padding_mode="reflect"), T.ToTensor(),
                                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))


def train(images: str, output: str, config_file: str = DEFAULT_CONFIG, opts=(), steps: int = 0, batch: int = 8,
          lr: float = 1e-3, size: int = 224, workers: int = 2, seed: int = 0, log_every: int = 10,
          save_every: int = 100) -> list:
    """Train and save the checkpoint to ``output``; returns the per-step total losses."""
    # this tool writes MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS; the config's file need not exist yet
    cfg = setup_cfg(config_file, ["MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "", *opts])
    torch.manual_seed(seed)
    m = cfg.MODEL
    clip = CLIPEncoder(m.CLIP.ARCH, pretrained=m.CLIP.PRETRAINED, image_size=m.CLIP.IMAGE_SIZE, finetune="none",
                       guidance_layers=(), dense_last_block=False, allow_download=m.CLIP.ALLOW_DOWNLOAD,
                       pos_embed_resize=m.CLIP.POS_EMBED_RESIZE)
    if size % clip.patch_size:
        raise ValueError(f"--size {size} is not a multiple of the patch size {clip.patch_size}")
    device = torch.device(m.DEVICE)
    model = SimFeatUpTraining(clip, seed=seed).to(device).train()
    optimizer = build_optimizer(model, size, lr)
    loader = DataLoader(ImageFolder(images, size), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=len(ImageFolder(images, size)) >= batch,
                        generator=torch.Generator().manual_seed(seed))
    total_steps = steps or len(loader)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    losses, start = [], time.perf_counter()
    while model.global_step < total_steps:
        for batch_images in loader:
            stats = model.step(batch_images.to(device), optimizer)
            losses.append(stats["total"])
            if model.global_step % log_every == 0 or model.global_step == total_steps:
                logger.info("step %d/%d: loss %.4f (rec %.4f, rec_img %.4f), %.2f s/step", model.global_step,
                            total_steps, stats["total"], stats["rec"], stats["rec_img"],
                            (time.perf_counter() - start) / model.global_step)
            if model.global_step % save_every == 0:
                _save(model, output)
            if model.global_step >= total_steps:
                break
    _save(model, output)
    logger.info("SimFeatUp checkpoint: %s (loss first %.4f, last %.4f)", output, losses[0], losses[-1])
    return losses


def _save(model: SimFeatUpTraining, output: str) -> None:
    tmp = f"{output}.tmp"
    torch.save(simfeatup_checkpoint(model.upsampler, global_step=model.global_step), tmp)
    os.replace(tmp, output)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of training images (searched recursively)")
    parser.add_argument("--output", default="output/simfeatup/simfeatup.ckpt", help="checkpoint file to write")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="config giving MODEL.CLIP.*")
    parser.add_argument("--steps", type=int, default=0, help="optimisation steps (default: one epoch)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=224, help="crop side")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides (e.g. MODEL.DEVICE cpu)")
    args = parse_args_with_overrides(parser, argv)  # KEY VALUE pairs may precede options
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args.images, args.output, args.config_file, args.opts, args.steps, args.batch, args.lr, args.size,
          args.workers, args.seed)


if __name__ == "__main__":
    main()
