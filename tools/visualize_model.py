#!/usr/bin/env python
"""What the model sees: one PNG with, per class, the cost volume before aggregation (per rotation
view where rotations are on), the aggregated embedding, the decoder's scores and the final map.

    python tools/visualize_model.py IMAGE --config-file CFG --weights CKPT --classes water tree building \\
        [--output model_view.png] [--bands 3 2 1 --scaling percentile] [KEY VALUE ...]

For the cost-aggregation models (CAT-Seg, OVRS, GSNet, Pi-Seg, AerOSeg, RSKT-Seg: the
``CostAggregationSegmentor``). The image is scored once with the whole-image protocol, and the
tensors are taken with forward hooks on the model's aggregator and decoder (nothing is
recomputed):

* **cost**: the CLIP cosine cost volume the aggregator receives, (P', T, g, g), averaged over the
  prompt templates; with ``MODEL.COST.ROTATIONS`` and ``stack`` fusion one panel per rotation view
  (already rotated back), with ``mean`` fusion their average. Specialist costs (GSNet's DINO) are
  not drawn. Colour range: the cost's own min..max over all classes (cosines are small);
* **aggregated**: the L2 norm over channels of the aggregator's output embedding (T, hidden, g, g);
* **decoder**: sigmoid of the decoder's logits at its resolution (4g);
* **final**: the per-class probabilities at the image's size, as the predictor returns them.

The header row shows the image and the predicted label map. ``--max-classes`` rows at most.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ovrsis  # noqa: F401  (CPU process defaults before torch, compat shims before detectron2)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the demo's argument helpers
from demo import add_model_arguments, add_raster_arguments, flag_hints, raster_overrides, split_overrides  # noqa: E402
from ovrsis.data.vocabulary import display_name  # noqa: E402
from ovrsis.engine import report_user_errors  # noqa: E402
from ovrsis.errors import ConfigError  # noqa: E402
from ovrsis.predictor import Predictor  # noqa: E402
from ovrsis.visualization import class_colors, colorize, panels_figure, save_figure  # noqa: E402


def capture_model_view(predictor: Predictor, image: str, class_names: list) -> dict:
    """Run one whole-image prediction and return ``cost`` (R, P, T, g, g) — R rotation views (1
    without rotations or under ``mean`` fusion) —, ``embedding`` (T, hidden, g, g), ``decoder``
    (T, 4g, 4g) sigmoid scores, and the :class:`~ovrsis.predictor.Prediction` as ``prediction``.

    Raises:
        ConfigError: a model without an aggregator/decoder, or more classes than
        ``MODEL.COST.MAX_CLASSES`` (the aggregator would see a per-image subset).
    """
    model = predictor.model
    if not (hasattr(model, "aggregator") and hasattr(model, "decoder")):
        raise ConfigError(f"{type(model).__name__} has no cost aggregation to draw; visualize_model.py is for the "
                          "CostAggregationSegmentor methods")
    if len(class_names) > model.max_classes:
        raise ConfigError(f"{len(class_names)} classes exceed MODEL.COST.MAX_CLASSES={model.max_classes}: the "
                          "aggregator sees a per-image subset; draw fewer classes")
    seen: dict = {}
    hooks = [model.aggregator.register_forward_hook(lambda m, args, out: seen.update(cost=args[0], embedding=out)),
             model.decoder.register_forward_hook(lambda m, args, out: seen.update(decoder=out))]
    try:
        prediction = predictor.predict(image, class_names)
    finally:
        for hook in hooks:
            hook.remove()
    cost = seen["cost"][0].float().cpu()  # (P', T, g, g)
    views = len(model.rotations) if model.rotation_fusion == "stack" else 1
    cost = cost.view(views, cost.shape[0] // views, *cost.shape[1:])
    return {"cost": cost, "embedding": seen["embedding"][0].float().cpu(),
            "decoder": seen["decoder"][0].float().sigmoid().cpu(), "prediction": prediction}


@flag_hints()
def main(argv: list[str] | None = None) -> int:
    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Config overrides go last, as KEY VALUE pairs.")
    parser.add_argument("image", help="an image file (any raster format)")
    add_model_arguments(parser, classes_file=False)
    add_raster_arguments(parser)
    parser.add_argument("--max-classes", type=int, default=8, help="rows to draw (default: %(default)s)")
    parser.add_argument("--output", default="model_view.png", help="PNG to write (default: %(default)s)")
    args = parser.parse_args(arguments)
    predictor = Predictor(args.config_file, args.weights, device=args.device, inference_mode="whole",
                          opts=overrides + raster_overrides(args))
    view = capture_model_view(predictor, args.image, args.classes)
    result = view["prediction"]
    names = result.class_names
    colors = class_colors(names)
    cost, embedding, decoder = view["cost"].mean(dim=1), view["embedding"].norm(dim=1), view["decoder"]
    rotations = predictor.model.rotations
    views = cost.shape[0]
    cost_titles = ([f"cost, view {r * 90}°" for r in rotations] if views > 1 else
                   ["cost (views averaged)" if len(rotations) > 1 else "cost"])
    lo, hi = float(cost.min()), float(cost.max())
    e_hi = float(embedding.max())
    rows = [[(result.image, "image", None, None, None),
             (colorize(result.labels, colors), "prediction", None, None, None)]]
    shown = list(range(min(len(names), args.max_classes)))
    for t in shown:
        row = [(cost[r, t].numpy(), cost_titles[r], "coolwarm", lo, hi) for r in range(views)]
        row += [(embedding[t].numpy(), "aggregated ‖e‖", "magma", 0.0, e_hi),
                (decoder[t].numpy(), "decoder (sigmoid)", "viridis", 0.0, 1.0),
                (result.probabilities[t].numpy(), "final", "viridis", 0.0, 1.0)]
        rows.append(row)
    labels = [""] + [display_name(names[t]) for t in shown]
    fig = panels_figure(rows, labels, legend=(names, colors), title=f"{Path(args.image).name}: {type(predictor.model).__name__}, "
                                             f"grid {tuple(cost.shape[-2:])}, rotations {list(rotations)}")
    save_figure(fig, args.output)
    print(f"wrote {args.output} ({len(shown)} of {len(names)} classes)")
    return 0


if __name__ == "__main__":
    with torch.no_grad():
        sys.exit(report_user_errors(main))
