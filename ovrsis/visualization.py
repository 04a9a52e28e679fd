"""Pictures of predictions, datasets and runs: one palette, one legend, one way to save.

Used by ``tools/demo.py``, ``tools/web_demo.py``, ``tools/browse_dataset.py``,
``tools/confusion_matrix.py`` and ``tools/analyze_logs.py``. Drawing goes through
matplotlib's object API (:class:`~matplotlib.figure.Figure` with the Agg canvas), never
``pyplot``, so it works headless and does not touch a caller's interactive backend.

Conventions: images are uint8 RGB (H, W, 3); label maps are integer (H, W) class ids in the
order of the vocabulary, with ``ignore`` (default 255) drawn black; class colours come from
:func:`class_colors` (by class name: water blue, vegetation green, ...; a palette otherwise);
every picture of labels has a legend with each class's display name (its first sub-prompt,
:func:`ovrsis.data.vocabulary.display_name`), every picture of scores a colour bar.
"""
from __future__ import annotations

import colorsys
import io
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .data.vocabulary import display_name

IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, deterministic: matplotlib's ``tab20`` order (paired hues
    de-interleaved: the 10 saturated ones first) for up to 20 classes, then golden-ratio hues
    at alternating lightness, so neighbouring ids stay distinguishable for any vocabulary size."""
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    tab20 = (np.asarray(colormaps["tab20"].colors) * 255).round().astype(np.uint8)
    base = np.concatenate([tab20[0::2], tab20[1::2]])
    if num_classes <= len(base):
        return base[:num_classes].copy()
    extra = []
    for i in range(num_classes - len(base)):
        hue = (i * 0.618033988749895) % 1.0
        lightness = 0.45 if i % 2 else 0.65
        extra.append([round(255 * c) for c in colorsys.hls_to_rgb(hue, lightness, 0.75)])
    return np.concatenate([base, np.asarray(extra, np.uint8)])


# Colours that fit what a class is (vegetation green, water blue, ...), looked up by the words of
# its display name; the first entry whose word occurs wins. RGB.
SEMANTIC_COLORS: tuple = (
    (("water", "river", "lake", "sea", "ocean", "pond", "reservoir", "canal", "wetland"), (31, 119, 200)),
    (("low vegetation", "grass", "meadow", "lawn", "pasture", "rangeland", "shrub"), (140, 200, 70)),
    (("tree", "forest", "woodland"), (20, 110, 40)),
    (("vegetation", "agricultur", "farmland", "cropland", "crop", "field", "plant"), (60, 170, 60)),
    (("bare soil", "barren", "soil", "sand", "desert", "bare", "dirt"), (190, 150, 90)),
    (("building", "roof", "house", "built-up", "urban"), (200, 40, 40)),
    (("road", "street", "highway", "impervious", "pavement", "parking", "railway", "runway"), (128, 128, 128)),
    (("car", "vehicle", "truck", "bus", "ship", "boat", "plane", "airplane"), (240, 200, 0)),
    (("cloud", "snow", "ice"), (235, 235, 245)),
    (("shadow",), (40, 40, 60)),
    (("clutter", "background", "other", "unlabeled"), (90, 60, 120)),
)


def class_colors(class_names: Sequence[str]) -> np.ndarray:
    """(T, 3) uint8 colours for a vocabulary, fitting each class where the table knows it
    (:data:`SEMANTIC_COLORS`: water blue, vegetation greens, buildings red, roads grey, ...), else
    the next :func:`palette` colour not taken yet; a colour is never given to two classes (a second
    class matching the same entry gets a darker, then a lighter shade of it)."""
    chosen: list = [None] * len(class_names)
    taken: set = set()
    for i, name in enumerate(class_names):
        words = display_name(name).lower()
        entry = next((color for keys, color in SEMANTIC_COLORS if any(key in words for key in keys)), None)
        if entry is None:
            continue
        rgb = np.asarray(entry, np.float64)
        shades = [rgb, 0.65 * rgb, rgb + 0.45 * (255 - rgb), 0.4 * rgb, rgb + 0.7 * (255 - rgb)]
        for shade in (tuple(int(round(v)) for v in c) for c in shades):
            if shade not in taken:
                chosen[i] = shade
                taken.add(shade)
                break
    spare = [tuple(int(v) for v in c) for c in palette(len(class_names) + 2 * len(SEMANTIC_COLORS) + 20)]

    def distinct(color: tuple) -> bool:  # not within 60 (RGB distance) of a colour in use
        return all(sum((a - b) ** 2 for a, b in zip(color, other)) >= 60 ** 2 for other in taken)

    for i, color in enumerate(chosen):
        if color is None:
            color = next((c for c in spare if distinct(c)), None) or next(c for c in spare if c not in taken)
            chosen[i] = color
            taken.add(color)
    return np.asarray(chosen, np.uint8).reshape(len(class_names), 3)


def colorize(labels: np.ndarray, colors: np.ndarray, ignore: int = 255) -> np.ndarray:
    """Label map (H, W) → uint8 RGB (H, W, 3): id ``i`` gets ``colors[i]``, ``ignore`` black.

    Raises:
        ValueError: an id (other than ``ignore``) outside ``0 .. len(colors) - 1``.
    """
    labels = np.asarray(labels)
    valid = labels != ignore
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() >= len(colors)):
        raise ValueError(f"label ids {int(labels[valid].min())}..{int(labels[valid].max())} outside the "
                         f"{len(colors)} palette colours (ignore value {ignore})")
    out = np.zeros((*labels.shape, 3), np.uint8)
    out[:] = IGNORE_COLOR
    out[valid] = colors[labels[valid]]
    return out


def overlay(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, alpha: float = 0.5,
            ignore: int = 255) -> np.ndarray:
    """uint8 RGB (H, W, 3): ``(1 - alpha) · image + alpha · colour`` where the label is valid, the
    image unchanged on ``ignore`` pixels. ``image`` and ``labels`` must share H, W."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and label map {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    mask_rgb = colorize(labels, colors, ignore).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * mask_rgb
    out = np.where((labels != ignore)[..., None], blended, image.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heatmap(probabilities: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """One class's probabilities (H, W) in 0..1 → uint8 RGB (H, W, 3) through ``cmap``
    (fixed 0..1 range, so heat-maps of different classes and images compare)."""
    values = np.clip(np.nan_to_num(np.asarray(probabilities, np.float32)), 0.0, 1.0)
    return (colormaps[cmap](values)[..., :3] * 255).round().astype(np.uint8)


def heatmap_figure(probabilities: np.ndarray, title: str, cmap: str = "viridis", tile_inches: float = 4.0) -> Figure:
    """One class's scores (H, W) through ``cmap`` over the fixed range 0..1, with a colour bar and
    ``title`` (e.g. the class name): a heat-map reads without knowing the colour map."""
    values = np.clip(np.nan_to_num(np.asarray(probabilities, np.float32)), 0.0, 1.0)
    height, width = values.shape
    fig = Figure(figsize=(tile_inches * width / max(height, width) + 1.0, tile_inches * height / max(height, width) + 0.5),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    shown = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="score").ax.tick_params(labelsize=7)
    return fig


def legend_handles(class_names: Sequence[str], colors: np.ndarray,
                   splits: Optional[Mapping[str, str]] = None) -> list:
    """Matplotlib patches for a legend: one per class, labelled with its display name
    (and ``[unseen]`` etc. when ``splits`` maps a class to its split)."""
    handles = []
    for name, color in zip(class_names, colors):
        tag = f" [{splits[name]}]" if splits and name in splits else ""
        handles.append(Patch(facecolor=np.asarray(color) / 255.0, edgecolor="black", linewidth=0.5,
                             label=display_name(name) + tag))
    return handles


def figure_with_legend(images: Sequence[np.ndarray], titles: Sequence[str], class_names: Sequence[str],
                       colors: np.ndarray, columns: Optional[int] = None, tile_inches: float = 3.2,
                       splits: Optional[Mapping[str, str]] = None) -> Figure:
    """A grid of images (row-major, ``columns`` per row; default: all in one row) with the
    class legend below. Returns the figure (save with :func:`save_figure`)."""
    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    columns = columns or max(len(images), 1)
    rows = max(1, -(-len(images) // columns))
    ncol = max(1, min(len(class_names), 3 * columns, 8))
    legend_rows = -(-len(class_names) // ncol) if class_names else 0
    fig = Figure(figsize=(tile_inches * columns, tile_inches * rows + 0.25 * legend_rows + 0.3), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    if class_names:
        fig.legend(handles=legend_handles(class_names, colors, splits), loc="outside lower center",
                   ncol=ncol, fontsize=7, frameon=False)
    return fig


def save_figure(fig: Figure, path: str, dpi: int = 100) -> None:
    """Write ``fig`` as PNG to ``path``."""
    fig.savefig(path, dpi=dpi)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (the web demo serves them)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], seen: Sequence[str] = (),
                     unseen: Sequence[str] = (), normalize: str = "true", title: str = "") -> Figure:
    """Confusion matrix (rows = ground truth, columns = prediction, pixel counts) as a figure.

    ``normalize``: ``true`` (each row sums to 1: recall per class), ``pred`` (each column sums
    to 1: precision), ``none`` (counts). Rows/columns with no pixels stay 0. Unseen classes'
    tick labels are red and suffixed ``*``; seen classes' are black (a note says so).

    Raises:
        ValueError: a non-square matrix, a size that differs from ``class_names``, an unknown
        ``normalize``.
    """
    conf = np.asarray(confusion, np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix {conf.shape} does not match {len(class_names)} classes")
    if normalize == "true":
        values = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1e-12)
    elif normalize == "pred":
        values = conf / np.maximum(conf.sum(axis=0, keepdims=True), 1e-12)
    elif normalize == "none":
        values = conf
    else:
        raise ValueError(f"normalize must be 'true', 'pred' or 'none', got {normalize!r}")
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.5), 40.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize != "none" else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    unseen_set = set(unseen)
    labels = [display_name(c) + (" *" if c in unseen_set else "") for c in class_names]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
        for tick, name in zip(ticks, class_names):
            tick.set_color("tab:red" if name in unseen_set else "black")
    if n <= 30:
        top = values.max() if values.size else 0.0
        for (i, j), v in np.ndenumerate(values):
            text = f"{v:.2f}" if normalize != "none" else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=6,
                    color="white" if top and v > 0.5 * top else "black")
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    note = {"true": "rows normalised (recall)", "pred": "columns normalised (precision)", "none": "pixel counts"}
    split_note = f"; red *: unseen ({len(unseen_set)}), black: seen ({len(seen)})" if unseen_set else ""
    ax.set_title((title + "\n" if title else "") + note[normalize] + split_note, fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(runs: Mapping[str, Mapping[str, Sequence[tuple]]], keys: Sequence[str]) -> Figure:
    """One panel per key, one line per run: ``runs[run][key]`` is a list of ``(iteration, value)``.
    Keys a run does not log are skipped for that run; a learning-rate key uses a log axis."""
    if not keys:
        raise ValueError("no metric keys to plot")
    fig = Figure(figsize=(5.0 * len(keys), 3.6))
    FigureCanvasAgg(fig)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), k + 1)
        for run, series in runs.items():
            points = series.get(key)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=run, marker="o" if len(points) < 5 else None, linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration")
        if key == "lr" or key.endswith("/lr") or key.startswith("lr"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def panels_figure(rows: Sequence[Sequence[Optional[tuple]]], row_labels: Sequence[str] = (),
                  tile_inches: float = 1.9, title: str = "",
                  legend: Optional[tuple] = None) -> Figure:
    """A grid of panels: ``rows[i][j]`` is ``(array, title, cmap, vmin, vmax)`` or ``None`` (empty).
    RGB arrays (H, W, 3) are drawn as they are; 2-D arrays through ``cmap`` within ``[vmin, vmax]``
    with a colour bar. ``row_labels`` go on the left of each row. ``legend``: ``(class_names,
    colors)`` of the label-map panels, drawn below the grid."""
    columns = max((len(r) for r in rows), default=1)
    fig = Figure(figsize=(tile_inches * columns + 0.6, tile_inches * len(rows) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = fig.add_subplot(len(rows), columns, i * columns + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
            if panel is None:
                ax.set_frame_on(False)
                continue
            array, panel_title, cmap, vmin, vmax = panel
            shown = ax.imshow(array, cmap=None if array.ndim == 3 else cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest")
            if array.ndim == 2:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_title(panel_title, fontsize=7)
    if legend is not None:
        names, colors = legend
        fig.legend(handles=legend_handles(names, colors), loc="outside lower center",
                   ncol=max(1, min(len(names), columns * 2, 8)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
