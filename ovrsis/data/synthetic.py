"""Built-in synthetic remote-sensing dataset: top-down scenes generated on first use.

Why: every part of the pipeline (training, seen/unseen evaluation, tools, tests) must run
with no download. The scenes are procedural, deterministic for a seed, and each class has
its own colour and texture so a model can actually learn them. Seen/unseen follows the
zero-shot protocol: the train split's vocabulary has only the seen classes, and unseen
pixels in its masks are ignored (255); the val split is scored on all classes.

Layout of one generated dataset (a folder per parameter set, so changed parameters
never reuse stale scenes)::

    <cache>/v1-size128-train64-val16-seed0/
        stamp.json                    generator version and parameters, written last
        train/images/00000.png        RGB scenes
        train/masks/00000.png         ids into SEEN_CLASSES, unseen pixels = 255
        val/images/00000.png
        val/masks/00000.png           ids into CLASS_NAMES
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .folder_dataset import register_folder_dataset

CLASS_NAMES = ("water", "tree", "grass", "bare soil", "road", "building", "vehicle")
UNSEEN_CLASSES = ("bare soil", "vehicle")
SEEN_CLASSES = tuple(name for name in CLASS_NAMES if name not in UNSEEN_CLASSES)
TRAIN_NAME = "synthetic_rs_train"
VAL_NAME = "synthetic_rs_val"
IGNORE_VALUE = 255
GENERATOR_VERSION = 1  # bump whenever the scenes change, so caches regenerate

WATER, TREE, GRASS, SOIL, ROAD, BUILDING, VEHICLE = range(len(CLASS_NAMES))

# Per class id: mean RGB, and the strength of fine / medium / coarse luminance texture.
_COLOUR = np.array(
    [
        [45, 75, 115],  # water: dark blue, smooth
        [40, 85, 40],  # tree: dark green, blobby crowns
        [110, 155, 75],  # grass: light green, patchy
        [170, 135, 95],  # bare soil: brown, grainy
        [125, 125, 130],  # road: grey asphalt
        [200, 95, 75],  # building: red roofs (tinted per building)
        [235, 235, 235],  # vehicle: light paint (tinted per vehicle)
    ],
    dtype=np.float32,
)
_TEXTURE = np.array(
    [[2, 2, 6], [6, 16, 6], [5, 6, 14], [10, 6, 12], [4, 2, 4], [3, 2, 0], [4, 0, 0]],
    dtype=np.float32,
)
# Full-vocabulary id -> train-vocabulary id (unseen -> ignore).
_TRAIN_IDS = np.full(256, IGNORE_VALUE, dtype=np.uint8)
for _train_id, _name in enumerate(SEEN_CLASSES):
    _TRAIN_IDS[CLASS_NAMES.index(_name)] = _train_id


def synthetic_root(root: str | os.PathLike | None = None) -> Path:
    """Cache folder: ``root``, else ``$OVRSIS_CACHE/synthetic_rs``, else ``~/.cache/ovrsis/synthetic_rs``."""
    if root:
        return Path(root).expanduser()
    cache = os.environ.get("OVRSIS_CACHE") or os.path.join("~", ".cache", "ovrsis")
    return Path(cache).expanduser() / "synthetic_rs"


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image, label)``, an RGB uint8 ``size×size×3`` image and its ids into CLASS_NAMES."""
    label, tint, shadow = _layout(rng, size)
    return _paint(rng, label, tint, shadow), label


def ensure_synthetic_dataset(
    root: str | os.PathLike | None = None,
    image_size: int = 128,
    num_train: int = 64,
    num_val: int = 16,
    seed: int = 0,
) -> Path:
    """Return the dataset folder for these parameters, generating it first if needed.

    Generation writes to a temporary sibling folder that is renamed into place only when
    complete, so an interrupted run never leaves a half dataset behind.
    """
    params = _params(image_size, num_train, num_val, seed)
    target = _dataset_folder(root, params)
    if _stamp_matches(target, params):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _generate(staging, params)
        if target.exists():  # stale: same name but a different stamp
            shutil.rmtree(target)
        os.rename(staging, target)
    except OSError:
        if not _stamp_matches(target, params):  # not just another process finishing first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def register_synthetic_datasets(
    root: str | os.PathLike | None = None,
    image_size: int = 128,
    num_train: int = 64,
    num_val: int = 16,
    seed: int = 0,
) -> None:
    """Register ``synthetic_rs_train`` (seen vocabulary) and ``synthetic_rs_val`` (all classes).

    Nothing is generated here: the scenes are made the first time either dataset is
    requested from ``DatasetCatalog``.
    """
    params = _params(image_size, num_train, num_val, seed)
    folder = _dataset_folder(root, params)

    def generate() -> None:
        ensure_synthetic_dataset(root, image_size, num_train, num_val, seed)

    for name, split, classes, unseen in (
        (TRAIN_NAME, "train", SEEN_CLASSES, ()),
        (VAL_NAME, "val", CLASS_NAMES, UNSEEN_CLASSES),
    ):
        register_folder_dataset(
            name,
            image_root=str(folder / split / "images"),
            mask_root=str(folder / split / "masks"),
            class_names=list(classes),
            ignore_value=IGNORE_VALUE,
            seen_classes=list(SEEN_CLASSES),
            unseen_classes=list(unseen),
            image_ext=".png",
            mask_ext=".png",
            before_load=generate,
        )


# --- scene layout ------------------------------------------------------------------------


def _layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the label map, per-object colour tints and the building shadows.

    Order matters: later layers cover earlier ones, buildings avoid roads and water,
    vehicles sit on roads and are drawn last.
    """
    scale = size / 128  # shapes are designed at 128 px and scale with the scene
    label = np.full((size, size), GRASS, dtype=np.uint8)
    tint = np.zeros((size, size, 3), dtype=np.float32)
    shadow = np.zeros((size, size), dtype=np.uint8)

    soil_field = _smooth_field(rng, size, cells=6)
    label[soil_field > np.quantile(soil_field, rng.uniform(0.75, 0.9))] = SOIL
    _draw_water(rng, label, scale)
    _draw_trees(rng, label, scale)
    roads = _draw_roads(rng, label, scale)
    _draw_buildings(rng, label, tint, shadow, roads, scale)
    _draw_vehicles(rng, label, tint, roads, scale)
    return label, tint, shadow


def _draw_water(rng: np.random.Generator, label: np.ndarray, scale: float) -> None:
    size = label.shape[0]
    if rng.random() < 0.5:  # a lake: overlapping ellipses around one centre
        centre = rng.uniform(0.2, 0.8, 2) * size
        for _ in range(rng.integers(2, 5)):
            axes = rng.uniform(6, 16, 2) * scale
            cv2.ellipse(
                label, _point(centre + rng.normal(0, 8 * scale, 2)), _point(axes),
                rng.uniform(0, 180), 0, 360, WATER, -1,
            )
    else:  # a river: a meandering thick polyline crossing the scene
        centre = rng.uniform(0.3, 0.7, 2) * size
        angle = rng.uniform(0, np.pi)
        along = np.array([np.cos(angle), np.sin(angle)])
        across = np.array([-along[1], along[0]])
        t = np.linspace(-1, 1, 33)[:, None] * size
        bends = np.sin(t / size * rng.uniform(4, 8) + rng.uniform(0, 2 * np.pi)) * rng.uniform(5, 12) * scale
        points = centre + t * along + bends * across
        thickness = max(2, round(rng.uniform(5, 10) * scale))
        cv2.polylines(label, [np.round(points).astype(np.int32)], False, WATER, thickness)


def _draw_trees(rng: np.random.Generator, label: np.ndarray, scale: float) -> None:
    size = label.shape[0]
    for _ in range(rng.integers(2, 5)):  # clusters of round crowns
        count = rng.integers(4, 12)
        crowns = rng.uniform(0, size, 2) + rng.normal(0, 7 * scale, (count, 2))
        for centre, radius in zip(crowns, rng.uniform(2.5, 5.5, count) * scale):
            cv2.circle(label, _point(centre), max(1, round(radius)), TREE, -1)


def _draw_roads(rng: np.random.Generator, label: np.ndarray, scale: float) -> list[tuple]:
    """Straight roads at random angles; returns ``(centre, direction, width)`` for each."""
    size = label.shape[0]
    roads = []
    for _ in range(rng.integers(1, 3)):
        centre = rng.uniform(0.25, 0.75, 2) * size
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        width = rng.uniform(6, 10) * scale
        ends = centre + np.array([[-2], [2]]) * size * direction
        cv2.line(label, _point(ends[0]), _point(ends[1]), ROAD, max(2, round(width)))
        roads.append((centre, direction, width))
    return roads


def _draw_buildings(
    rng: np.random.Generator,
    label: np.ndarray,
    tint: np.ndarray,
    shadow: np.ndarray,
    roads: list[tuple],
    scale: float,
) -> None:
    """Rotated-rectangle roofs on free ground, each with its own tint and a cast shadow."""
    size = label.shape[0]
    sun = rng.normal(size=2)
    shadow_offset = sun / np.linalg.norm(sun) * rng.uniform(2, 4) * scale  # one sun per scene
    blocked = (label == ROAD) | (label == WATER)
    for _ in range(rng.integers(3, 9)):
        for _attempt in range(20):
            if rng.random() < 0.5:  # most buildings line up with a road
                direction = roads[rng.integers(len(roads))][1]
                angle = np.degrees(np.arctan2(direction[1], direction[0]))
            else:
                angle = rng.uniform(0, 180)
            sides = rng.uniform([10, 8], [22, 16]) * scale
            corners = cv2.boxPoints((tuple(rng.uniform(0, size, 2)), tuple(sides), angle))
            footprint = np.zeros_like(label)
            cv2.fillPoly(footprint, [np.round(corners).astype(np.int32)], 1)
            footprint = footprint.astype(bool)
            if footprint.any() and not (footprint & blocked).any():
                break
        else:
            continue  # no free spot for this building
        cv2.fillPoly(shadow, [np.round(corners + shadow_offset).astype(np.int32)], 1)
        label[footprint] = BUILDING
        tint[footprint] = rng.normal(0, 15, 3)
        blocked |= footprint


def _draw_vehicles(
    rng: np.random.Generator, label: np.ndarray, tint: np.ndarray, roads: list[tuple], scale: float
) -> None:
    """Small rectangles on the roads, aligned with the road direction."""
    size = label.shape[0]
    margin = 4 * scale
    for centre, direction, width in roads:
        across = np.array([-direction[1], direction[0]])
        angle = np.degrees(np.arctan2(direction[1], direction[0]))
        for _ in range(rng.integers(1, 4)):
            for _attempt in range(10):
                spot = centre + rng.uniform(-0.7, 0.7) * size * direction
                spot = spot + rng.uniform(-0.3, 0.3) * width * across
                if np.all((spot >= margin) & (spot <= size - margin)):
                    break
            else:
                continue
            corners = cv2.boxPoints((tuple(spot), (7 * scale, 3.5 * scale), angle))
            polygon = [np.round(corners).astype(np.int32)]
            cv2.fillPoly(label, polygon, VEHICLE)
            cv2.fillPoly(tint, polygon, rng.normal(0, 25, 3).tolist())


# --- rendering ---------------------------------------------------------------------------


def _paint(rng: np.random.Generator, label: np.ndarray, tint: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Colour the label map: class colour + scene drift + textures at three scales + noise."""
    size = label.shape[0]
    fine = rng.standard_normal((size, size)).astype(np.float32)
    medium = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 1.2)
    coarse = _smooth_field(rng, size, cells=max(2, size // 16))
    weights = _TEXTURE[label]
    luminance = (
        weights[..., 0] * fine
        + weights[..., 1] * medium / medium.std()
        + weights[..., 2] * coarse / coarse.std()
    )
    colours = _COLOUR + rng.normal(0, 6, _COLOUR.shape).astype(np.float32)  # per-scene drift
    image = colours[label] + tint + luminance[..., None]
    image += rng.normal(0, 2, image.shape).astype(np.float32)  # sensor noise
    image[(shadow > 0) & (label != BUILDING)] *= 0.55
    image *= rng.uniform(0.9, 1.1)  # scene illumination
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise: a ``cells×cells`` random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _point(xy: np.ndarray) -> tuple[int, int]:
    return int(round(xy[0])), int(round(xy[1]))


# --- cache -------------------------------------------------------------------------------


def _params(image_size: int, num_train: int, num_val: int, seed: int) -> dict:
    if image_size < 32 or num_train < 1 or num_val < 1 or seed < 0:
        raise ValueError(
            "synthetic dataset needs image_size >= 32, num_train >= 1, num_val >= 1, seed >= 0; "
            f"got {image_size}, {num_train}, {num_val}, {seed}"
        )
    return {
        "version": GENERATOR_VERSION,
        "image_size": int(image_size),
        "num_train": int(num_train),
        "num_val": int(num_val),
        "seed": int(seed),
        "classes": list(CLASS_NAMES),
        "unseen_classes": list(UNSEEN_CLASSES),
    }


def _dataset_folder(root: str | os.PathLike | None, params: dict) -> Path:
    name = "v{version}-size{image_size}-train{num_train}-val{num_val}-seed{seed}".format(**params)
    return synthetic_root(root) / name


def _stamp_matches(folder: Path, params: dict) -> bool:
    try:
        return json.loads((folder / "stamp.json").read_text()) == params
    except (OSError, ValueError):
        return False


def _generate(folder: Path, params: dict) -> None:
    """Write both splits, then the stamp (its presence marks a complete dataset)."""
    for split_code, (split, count) in enumerate((("train", params["num_train"]), ("val", params["num_val"]))):
        (folder / split / "images").mkdir(parents=True)
        (folder / split / "masks").mkdir(parents=True)
        for index in range(count):
            rng = np.random.default_rng([params["seed"], split_code, index])  # scenes independent
            image, label = render_scene(rng, params["image_size"])
            mask = _TRAIN_IDS[label] if split == "train" else label
            _write_png(folder / split / "images" / f"{index:05d}.png", image[:, :, ::-1])  # cv2 wants BGR
            _write_png(folder / split / "masks" / f"{index:05d}.png", mask)
    (folder / "stamp.json").write_text(json.dumps(params, indent=2))


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(array)):
        raise OSError(f"could not write {path}")
