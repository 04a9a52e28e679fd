"""The project's config keys, added to every config made after the import."""
from detectron2.config import CfgNode as CN

from ovrsis.config import register_config


@register_config
def add_cost_gate_config(cfg: CN) -> None:
    """``MODEL.COST_GATE``: settings of :class:`~cost_gate.fusion.CostGateFusion`."""
    cfg.MODEL.COST_GATE = CN()
    cfg.MODEL.COST_GATE.HIDDEN = 16  # width of the gate's MLP
    cfg.MODEL.COST_GATE.INIT_BIAS = 2.0  # initial gate logit: sigmoid(2) = 0.88, the gates start nearly open
