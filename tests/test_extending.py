"""A method of one's own without forking: ``IMPORTS`` (ovrsis/imports.py) in every process that
builds a model, the registries a new part goes into, and the projects/cost_gate example."""
from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import ovrsis
import ovrsis.modeling  # noqa: F401
from ovrsis.engine import setup_cfg
from ovrsis.errors import ConfigError
from ovrsis.imports import config_imports, import_modules
from ovrsis.modeling.registry import COST_FUSION_REGISTRY

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
PROJECT = REPO / "projects" / "cost_gate"
TINY = ["MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "0",
        "DATALOADER.NUM_WORKERS", "0", "DATASETS.SYNTHETIC.NUM_TRAIN", "4", "DATASETS.SYNTHETIC.NUM_VAL", "2",
        "INPUT.CROP.SIZE", "(64, 64)", "SOLVER.CHECKPOINT_PERIOD", "1000"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


def user_module(folder: Path, tag: str) -> Path:
    """A module outside the package: a cost fusion ``tag`` with a key ``MODEL.<TAG>.SCALE`` of its own,
    which writes a marker file (named by an environment variable) whenever it is built — in whichever
    process builds it."""
    path = folder / f"{tag}_fusion.py"
    path.write_text(textwrap.dedent(f"""
        import os
        from detectron2.config import CfgNode as CN
        from detectron2.utils import comm
        from ovrsis.config import register_config
        from ovrsis.modeling.cost.fusion import ConvCostEmbedding
        from ovrsis.modeling.registry import COST_FUSION_REGISTRY

        @register_config
        def add_{tag}_config(cfg):
            cfg.MODEL.{tag.upper()} = CN()
            cfg.MODEL.{tag.upper()}.SCALE = 1.0

        @COST_FUSION_REGISTRY.register(name="{tag}")
        class Fusion(ConvCostEmbedding):
            @classmethod
            def from_config(cls, cfg, *, cost_channels, hidden_dim):
                marker = os.environ.get("OVRSIS_TEST_MARKER")
                if marker:
                    with open(os.path.join(marker, f"built-{{os.getpid()}}-rank{{comm.get_rank()}}"), "w") as f:
                        f.write(str(cfg.MODEL.{tag.upper()}.SCALE))
                return cls(cost_channels, hidden_dim)
        """))
    return path


def user_config(folder: Path, module: Path, tag: str, scale: float = 2.5) -> Path:
    path = folder / "config.yaml"
    path.write_text(f'_BASE_: "{QUICKSTART}"\nIMPORTS: ["{module}"]\n'
                    f"MODEL:\n  DEVICE: cpu\n  COST:\n    FUSION: {tag}\n  {tag.upper()}:\n    SCALE: {scale}\n")
    return path


# ---------------------------------------------------------------------------- the key
def test_imports_are_read_before_the_merge_and_saved_as_absolute_paths(tmp_path, monkeypatch):
    module = user_module(tmp_path, "alpha")
    monkeypatch.chdir(tmp_path)
    config = user_config(tmp_path, Path(module.name), "alpha")  # relative: read from the current directory
    assert config_imports(str(config)) == ["alpha_fusion.py"]
    cfg = setup_cfg(str(config), ["MODEL.DEVICE", "cpu"])
    assert cfg.IMPORTS == [str(module)] and cfg.MODEL.ALPHA.SCALE == 2.5 and cfg.MODEL.COST.FUSION == "alpha"
    from detectron2.modeling import build_model

    assert type(build_model(cfg).aggregator.cost_embed).__module__ == "alpha_fusion"
    # a second config (another process would do the same) reuses the module: no second registration
    assert setup_cfg(str(config), ["MODEL.DEVICE", "cpu"]).IMPORTS == [str(module)]
    assert import_modules([str(module)]) == [str(module)]


@pytest.mark.parametrize("entry, message", [
    ("no_such_fusion.py", r"IMPORTS: 'no_such_fusion.py' does not exist"),
    ("cost_gatee", r"IMPORTS: no module named 'cost_gatee'"),
    ("ovrsis.modeling.cost.fusoin", r"IMPORTS: no module named 'ovrsis.modeling.cost.fusoin' \(did you mean "
                                    r"'ovrsis.modeling.cost.fusion'"),
    ("broken.py", r"IMPORTS: importing '.*broken.py' failed at .*broken.py:2: NameError"),
    ("folder/", r"IMPORTS: 'folder/' is a folder without __init__.py"),
    ("folder", r"IMPORTS: 'folder' is a namespace package \(no __init__.py\)"),
])
def test_a_failing_import_is_one_error_naming_the_key_and_the_module(tmp_path, monkeypatch, entry, message):
    (tmp_path / "broken.py").write_text("x = 1\ny = undefined_name\n")
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        setup_cfg(str(QUICKSTART), ["IMPORTS", f"[{entry}]", "MODEL.DEVICE", "cpu"])


def test_misspelt_part_names_the_key_the_close_names_and_imports():
    with pytest.raises(ConfigError, match=r"MODEL.COST.FUSION: no cost fusion part named 'qgf' "
                                          r"\(did you mean 'qgff'.*list it in IMPORTS"):
        COST_FUSION_REGISTRY.get("qgf")


def test_misspelt_module_stops_train_net_with_one_line(tmp_path, capsys):
    from detectron2.engine import default_argument_parser

    from ovrsis.engine import report_user_errors
    from ovrsis.sweep.worker import TRAIN_SCRIPT, load_script

    args = default_argument_parser().parse_args(["--config-file", str(QUICKSTART), "IMPORTS",
                                                 "[projects/cost_gate/cost_gaet]", *TINY, "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        report_user_errors(load_script(TRAIN_SCRIPT).main, args)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "ovrsis: error: IMPORTS: 'projects/cost_gate/cost_gaet' does not exist (relative paths are read from the "
        f"current directory, {os.getcwd()}); expected a .py file, a package folder or a dotted module name\n")


# ---------------------------------------------------------------------------- every process
@pytest.mark.parametrize("as_node", [False, True])
def test_predictor_builds_the_imported_part(tmp_path, monkeypatch, as_node):
    import numpy as np

    marker = tmp_path / "markers"
    marker.mkdir()
    monkeypatch.setenv("OVRSIS_TEST_MARKER", str(marker))
    tag = "delta" if as_node else "beta"  # one module per name and process
    config = user_config(tmp_path, user_module(tmp_path, tag), tag, scale=0.5)
    source = setup_cfg(str(config)) if as_node else str(config)
    predictor = ovrsis.Predictor(source, device="cpu")
    assert type(predictor.model.aggregator.cost_embed).__name__ == "Fusion"
    assert [p.read_text() for p in marker.iterdir()] == ["0.5"]  # built once, with the key from the file
    result = predictor.predict(np.zeros((40, 48, 3), np.uint8), ["water", "road"])
    assert result.labels.shape == (40, 48)


def test_a_submitit_sweep_job_builds_the_imported_part(tmp_path, monkeypatch):
    """The sweep process validates with the module; the run goes to a submitit local-executor job
    (another process), whose worker builds the part with the key from the run's sweep_config.yaml
    (IMPORTS saved as an absolute path). Every rank of a multi-process run: the projects/ example
    trains with --num-gpus 2 (tests/test_readme.py)."""
    sys.path.insert(0, str(REPO / "eval_scripts"))
    import sweep as sweep_cli  # noqa: E402  (eval_scripts/sweep.py)

    from ovrsis.sweep.state import read_state

    marker = tmp_path / "markers"
    marker.mkdir()
    monkeypatch.setenv("OVRSIS_TEST_MARKER", str(marker))
    monkeypatch.chdir(tmp_path)
    module = user_module(tmp_path, "gamma")
    user_config(tmp_path, Path(module.name), "gamma")
    overrides = dict(zip(TINY[0::2], TINY[1::2]))
    overrides.pop("MODEL.DEVICE")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "imports", "base": "config.yaml", "overrides": {k: yaml.safe_load(v) for k, v in overrides.items()},
        "grid": {"MODEL.GAMMA.SCALE": [4.0]}, "evaluation": {"datasets": ["synthetic_rs_val"]}}))
    out = tmp_path / "out"
    assert sweep_cli.main(["sweep.yaml", "--output", str(out), "--backend", "slurm", "--submitit-cluster", "local",
                           "--gpus-per-node", "1", "--wait"]) == 0
    run = out / "scale=4__seed42"
    assert read_state(str(run))["status"] == "finished"
    assert yaml.safe_load((run / "sweep_config.yaml").read_text())["IMPORTS"] == [str(module)]
    built = {p.name for p in marker.iterdir() if int(p.name.split("-")[1]) != os.getpid()}  # not the sweep's check
    assert len(built) == 1 and all(p.read_text() == "4.0" for p in marker.iterdir())


# ---------------------------------------------------------------------------- every kind of part
PARTS = '''
import torch
from detectron2.config import CfgNode as CN
from torch import nn
from ovrsis.config import register_config
from ovrsis.modeling.aggregation.catseg import CATSegAggregator
from ovrsis.modeling.decoders.guided_upsampling import GuidedUpsamplingDecoder
from ovrsis.modeling.encoders.specialist import StreamOutput
from ovrsis.modeling.perturbation import PerturbationStage
from ovrsis.modeling.registry import (AGGREGATOR_REGISTRY, DECODER_REGISTRY, INFERENCE_PROTOCOL_REGISTRY,
                                      LOSS_HEAD_REGISTRY, PERTURBATION_REGISTRY, STREAM_REGISTRY,
                                      TEMPLATE_SET_REGISTRY)

@register_config
def add_edge_config(cfg):
    cfg.MODEL.EDGE = CN()
    cfg.MODEL.EDGE.ENABLED = False

class EdgeStream(nn.Module):  # appearance features only
    has_cost, has_guidance, feature_dim = False, False, 8
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 3, padding=1)
    def forward(self, images, text):
        return StreamOutput(None, [], self.proj(images))

@STREAM_REGISTRY.register(name="edge")
def edge_stream(cfg, *, clip_image_size, clip_grid, text_dim):
    return EdgeStream() if cfg.MODEL.EDGE.ENABLED else None

@AGGREGATOR_REGISTRY.register()
class MyAggregator(CATSegAggregator):
    pass

@DECODER_REGISTRY.register()
class MyDecoder(GuidedUpsamplingDecoder):
    pass

@LOSS_HEAD_REGISTRY.register()
class MeanHead(nn.Module):
    @classmethod
    def from_config(cls, cfg, *, in_dim, feature_dims, train_classes):
        return cls()
    def forward(self, state):
        return {"loss_mean": state["embedding"].mean() * 0}

@PERTURBATION_REGISTRY.register()
class Shift(PerturbationStage):
    @classmethod
    def from_config(cls, cfg, dim):
        return cls()
    def perturb_text(self, text):
        return text + 0.01 if self.training else text

TEMPLATE_SET_REGISTRY.register(("an aerial photo of a {}.", "a {} seen from above."), "aerial")

@INFERENCE_PROTOCOL_REGISTRY.register(name="flip")
class FlipAverage:
    @classmethod
    def from_config(cls, cfg):
        return cls()
    def __call__(self, model, x, classes):
        flipped = dict(x, image=x["image"].flip(-1))
        return (model._inference_whole(x, classes) + model._inference_whole(flipped, classes).flip(-1)) / 2
'''

KINDS = {  # registry: (config overrides, what shows that the model uses the part)
    "stream": (["MODEL.EDGE.ENABLED", "True", "MODEL.AGGREGATOR.APPEARANCE_GUIDANCE_SOURCE", "edge"],
               lambda m: type(m.specialists["edge"]).__name__ == "EdgeStream"),
    "aggregator": (["MODEL.AGGREGATOR.NAME", "MyAggregator"], lambda m: type(m.aggregator).__name__ == "MyAggregator"),
    "decoder": (["MODEL.DECODER.NAME", "MyDecoder"], lambda m: type(m.decoder).__name__ == "MyDecoder"),
    "loss head": (["MODEL.LOSS.HEADS", "['MeanHead']"], lambda m: "MeanHead" in m.loss_heads),
    "perturbation": (["MODEL.PERTURBATION.NAME", "Shift"], lambda m: type(m.perturbation).__name__ == "Shift"),
    "template set": (["MODEL.TEXT.TEMPLATE_SET", "aerial"],
                     lambda m: len(m.clip.templates) == 2 and m.aggregator.cost_embed.in_channels == 2),
    "inference protocol": (["TEST.INFERENCE_MODE", "flip"], lambda m: m.inference_mode == "flip"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_of_part_plugs_in_from_outside_the_package(tmp_path, monkeypatch, kind, one_thread):
    """One module outside the package registers a part of each kind; a config picks it by name and
    the model trains a step and predicts with it (no edit of ovrsis/)."""
    from detectron2.modeling import build_model

    module = tmp_path.parent / "ovrsis_test_parts.py"  # shared by the matrix: imported once per process
    if not module.exists():
        module.write_text(PARTS)
    opts, uses = KINDS[kind]
    cfg = setup_cfg(str(QUICKSTART), ["IMPORTS", f"[{module}]", "MODEL.DEVICE", "cpu", *opts])
    model = build_model(cfg)
    assert uses(model)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    losses = model([{"image": image, "sem_seg": torch.randint(0, 5, (64, 64))}])
    sum(losses.values()).backward()
    assert ("loss_mean" in losses) == (kind == "loss head")
    model.eval()
    with torch.no_grad():
        probs = model([{"image": image, "height": 40, "width": 48}])[0]["sem_seg"]
    assert probs.shape == (len(model.test_classes), 40, 48) and torch.isfinite(probs).all()


def test_a_projects_parts_serve_only_the_configs_that_import_it(tmp_path):
    """After one config imported a project with a stream and keys, a config without it in IMPORTS
    builds as before: no foreign stream (whose builder would read keys this config lacks), no foreign keys."""
    from detectron2.modeling import build_model

    module = tmp_path.parent / "ovrsis_test_parts.py"
    if not module.exists():
        module.write_text(PARTS)
    with_parts = setup_cfg(str(QUICKSTART), ["IMPORTS", f"[{module}]", "MODEL.DEVICE", "cpu"])
    plain = setup_cfg(str(QUICKSTART), ["MODEL.DEVICE", "cpu"])
    assert "EDGE" in with_parts.MODEL and "EDGE" not in plain.MODEL
    assert len(build_model(plain).specialists) == 0
