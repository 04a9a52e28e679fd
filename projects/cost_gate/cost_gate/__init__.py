"""Cost gate: a worked example of a method of one's own, outside the ovrsis package.

Importing this package (``IMPORTS: [projects/cost_gate/cost_gate]`` in a config) registers

* the config keys ``MODEL.COST_GATE.*`` (:func:`~cost_gate.config.add_cost_gate_config`), and
* the cost fusion ``cost_gate`` (:class:`~cost_gate.fusion.CostGateFusion`), chosen by
  ``MODEL.COST.FUSION: cost_gate``.

Nothing in ``ovrsis/`` names it; ``projects/cost_gate/README.md`` trains it and sweeps its switch.
"""
from .config import add_cost_gate_config
from .fusion import CostGateFusion

__all__ = ["CostGateFusion", "add_cost_gate_config"]
