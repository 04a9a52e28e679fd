"""Whole scenes at any size: streaming prediction with memory independent of the scene.

``Predictor.predict_scene`` and ``tools/predict_scene.py`` read a scene window by window
(:mod:`.source`), score the tiles of the tiled protocol panel by panel (:mod:`.plan`,
:mod:`.predict`), write cloud-optimised GeoTIFFs, polygons and a quick-look (:mod:`.outputs`,
:mod:`.polygons`), resume killed runs (:mod:`.state`) and score scenes against label rasters
(:mod:`.evaluate`).
"""
from .predict import SceneOptions, SceneResult, run_scene

__all__ = ["SceneOptions", "SceneResult", "run_scene"]
