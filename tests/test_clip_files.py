"""CLIP weight files (ovrsis.modeling.encoders.clip_files): OpenAI TorchScript archives for every
key that takes a CLIP file, the activation check, and the SegEarth-OV backbone overlays."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.errors import ConfigError
from ovrsis.modeling.encoders.clip import CLIPEncoder, _register_bundled_configs
from ovrsis.modeling.encoders.clip_files import (CLIP_FILE_KEYS, OPENAI_ARCHIVE_META, check_activation,
                                                 expected_activation, is_torchscript_archive, model_activation,
                                                 read_clip_file)
from ovrsis.modeling.encoders.guidance_clip import GuidanceCLIPEncoder

REPO = Path(__file__).resolve().parents[1]
TINY = "ovrsis-tiny-vit"  # QuickGELU
TINY_GELU = "ovrsis-test-tiny-vit-gelu"


@pytest.fixture(scope="module")
def tiny_state():
    import open_clip

    _register_bundled_configs()
    torch.manual_seed(3)
    return open_clip.create_model(TINY, pretrained=None).state_dict()


@pytest.fixture(scope="module")
def gelu_arch(tmp_path_factory):
    """The tiny CLIP with GELU blocks, registered with open_clip for this module."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip_configs")
    config = json.loads((REPO / "ovrsis/modeling/encoders/clip_configs/ovrsis-tiny-vit.json").read_text())
    config["quick_gelu"] = False
    (folder / f"{TINY_GELU}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_GELU


def write_openai_archive(state: dict, path: Path) -> None:
    """A TorchScript archive laid out as OpenAI's CLIP files: the state dict's key names, fp16
    weights and the scalar entries input_resolution / context_length / vocab_size."""
    root = nn.Module()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        node = root
        for part in parents:
            if part not in node._modules:
                node.add_module(part, nn.Module())
            node = node._modules[part]
        node.register_parameter(leaf, nn.Parameter(value.half(), requires_grad=False))
    for name, value in zip(OPENAI_ARCHIVE_META, (64, 77, 49408)):
        root.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():  # torch.jit.script is deprecated; OpenAI's files are TorchScript
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.script(root).save(str(path))


def build(key: str, arch: str, path: str) -> nn.Module:
    if key == "MODEL.CLIP.PRETRAINED":
        return CLIPEncoder(arch, pretrained=path, image_size=64, finetune="none", guidance_layers=())
    return GuidanceCLIPEncoder(arch, weights=path, image_size=64, out_indices=(1,), text_tower=True)


@pytest.mark.parametrize("key", CLIP_FILE_KEYS)
def test_openai_torchscript_archive_loads_as_its_state_dict(key, tiny_state, tmp_path, caplog):
    archive, plain = tmp_path / "ViT-tiny.pt", tmp_path / "plain.pt"
    write_openai_archive(tiny_state, archive)
    torch.save({k: v.half().float() for k, v in tiny_state.items()}, plain)  # the archive's fp16 values
    assert is_torchscript_archive(str(archive)) and not is_torchscript_archive(str(plain))
    read = read_clip_file(str(archive), key)
    assert read.openai_archive and set(read.state) == set(tiny_state)
    with caplog.at_level(logging.INFO):
        from_archive = build(key, TINY, str(archive))
    assert "all" in caplog.text and "tensors matched" in caplog.text
    reference = build(key, TINY, str(plain)).state_dict()
    got = from_archive.state_dict()
    assert set(got) == set(reference)
    for name, value in reference.items():
        assert torch.equal(got[name], value), name


@pytest.mark.parametrize("key", CLIP_FILE_KEYS)
def test_openai_archive_mismatches_are_refused(key, tiny_state, gelu_arch, tmp_path):
    archive = tmp_path / "ViT-tiny.pt"
    write_openai_archive(tiny_state, archive)
    with pytest.raises(ConfigError, match=r"OpenAI TorchScript archive.*builds gelu blocks"):
        build(key, gelu_arch, str(archive))  # OpenAI weights in a GELU model
    damaged = {k: v for k, v in tiny_state.items() if k != "visual.ln_post.bias"}
    write_openai_archive(damaged, archive)
    with pytest.raises(ValueError, match=r"1 missing \[visual.ln_post.bias\]"):
        build(key, TINY, str(archive))  # strict: the key report names the missing tensor


def test_activation_of_tags_and_known_file_families(tiny_state, gelu_arch, caplog):
    import open_clip

    assert expected_activation("openai", "ViT-B-16", is_tag=True)[::2] == ("quickgelu", True)
    assert expected_activation("laion2b_s34b_b88k", "ViT-B-16", is_tag=True)[::2] == ("gelu", True)
    assert expected_activation("pretrained/RemoteCLIP-ViT-B-32.pt", "ViT-B-32")[::2] == ("gelu", False)
    assert expected_activation("pretrained/weights.pt", "ViT-B-32") is None
    quick, gelu = (open_clip.create_model(a, pretrained=None) for a in (TINY, gelu_arch))
    assert (model_activation(quick), model_activation(gelu)) == ("quickgelu", "gelu")
    with pytest.raises(ConfigError, match="MODEL.CLIP.ARCH 'ViT-B-16'.*quickgelu architecture"):
        check_activation(gelu, "ViT-B-16", "MODEL.CLIP.ARCH", "openai", "MODEL.CLIP.PRETRAINED", is_tag=True)
    for name in ("RemoteCLIP-ViT-B-32.pt", "RS5M_ViT-B-32.pt", "SkyCLIP_ViT_B32_top50pct/epoch_20.pt"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            check_activation(quick, "ViT-B-32-quickgelu", "MODEL.RS_CLIP.ARCH", f"pretrained/{name}",
                             "MODEL.RS_CLIP.WEIGHTS")
        assert "ACTIVATION MISMATCH" in caplog.text and "'ViT-B-32'" in caplog.text, name
        caplog.clear()
        check_activation(gelu, "ViT-B-32", "MODEL.CLIP.ARCH", f"pretrained/{name}", "MODEL.CLIP.PRETRAINED")
        assert not caplog.text


# The activation each overlay's checkpoint family runs with in the official SegEarth-OV code
# (segearth_segmentor.py): OpenAI CLIP through open_clip's OpenAI loader (QuickGELU), RemoteCLIP,
# GeoRSCLIP and SkyCLIP through create_model('ViT-B/32', ...) (GELU).
BACKBONE_ACTIVATION = {"clip_b32": "quickgelu", "remoteclip_b32": "gelu", "georsclip_b32": "gelu",
                       "skyclip_b32": "gelu"}


@pytest.mark.parametrize("overlay", sorted((REPO / "configs/segearth_ov/backbones").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_segearth_backbone_overlays_use_the_official_activation(overlay):
    import open_clip

    _register_bundled_configs()
    clip = yaml.safe_load(overlay.read_text())["MODEL"]["CLIP"]
    arch, pretrained = clip["ARCH"], clip["PRETRAINED"]
    built = "quickgelu" if open_clip.get_model_config(arch).get("quick_gelu", False) else "gelu"
    assert built == BACKBONE_ACTIVATION[overlay.stem], f"{overlay.name}: {arch}"
    is_tag = "/" not in pretrained and not pretrained.endswith(".pt")
    assert expected_activation(pretrained, arch, is_tag=is_tag)[0] == built


def test_every_key_naming_a_clip_file_is_enumerated():
    """Each MODEL.*CLIP* key that takes a weights file is one the CLIP-file reader serves."""
    from detectron2.config import get_cfg

    from ovrsis.config import add_ovrsis_config

    cfg = get_cfg()
    add_ovrsis_config(cfg)
    keys = [f"MODEL.{node}.{key}" for node, sub in cfg.MODEL.items() if "CLIP" in node and hasattr(sub, "items")
            for key in sub if key in ("PRETRAINED", "WEIGHTS")]
    assert sorted(keys) == sorted(CLIP_FILE_KEYS)
