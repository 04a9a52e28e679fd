"""Polygons of a streamed label map: ``rasterio.features.shapes`` per window, merged across seams.

:func:`write_polygons` reads the finished labels raster window by window (``WINDOW`` pixels a
side); each window is polygonised on its own (4-connectivity, the rule of
:func:`ovrsis.export.label_polygons`). A region that does not touch a seam with another window
is complete and goes to the output at once; one that does is held until the end, when the held
polygons of each class are merged (``shapely.unary_union``: regions sharing an edge across a
seam become one, regions meeting at a corner stay apart as under 4-connectivity) and written.
Memory grows with the regions crossing seams, not with the scene. Output: a GeoJSON
FeatureCollection written as a stream, with the properties and coordinate rule of
:func:`~ovrsis.export.label_polygons` (WGS 84 longitude/latitude when the input has a CRS,
pixel coordinates without georeferencing); regions smaller than ``min_pixels`` are left out.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Sequence

import numpy as np

from ..data.raster import RasterInfo, open_rasterio
from ..export import coordinate_system, is_georeferenced, polygon_feature

WINDOW = 2048


class PolygonStream:
    """Collects the polygons of a scene's chunks into one GeoJSON file (module docstring)."""

    def __init__(self, path: str, info: RasterInfo, class_names: Sequence[str], min_pixels: int = 0) -> None:
        self.path, self.info, self.class_names, self.min_pixels = path, info, list(class_names), min_pixels
        self._tmp = path + ".partial"
        self._file = open(self._tmp, "w")
        self._count = 0
        self._held: dict[int, list] = defaultdict(list)
        geo = is_georeferenced(info)
        self._transform = info.transform if geo else None
        self._crs = info.crs if geo else None
        self._file.write('{"type": "FeatureCollection", "coordinate_system": ' + json.dumps(coordinate_system(info))
                         + ', "features": [\n')

    def add(self, labels: np.ndarray, row: int, col: int, nodata: int) -> None:
        """Polygonise one window (``labels`` (h, w) at scene pixel ``(row, col)``; ``nodata``
        pixels are left out)."""
        from rasterio import features
        from rasterio.transform import Affine
        from shapely.geometry import shape

        height, width = labels.shape
        mask = labels != nodata
        complete = []
        seams = (row > 0, row + height < self.info.height, col > 0, col + width < self.info.width)
        for geometry, value in features.shapes(labels.astype(np.int32), mask=mask, connectivity=4,
                                               transform=Affine.translation(col, row)):
            polygon = shape(geometry)
            x0, y0, x1, y1 = polygon.bounds
            touches = (seams[0] and y0 <= row) or (seams[1] and y1 >= row + height) or \
                (seams[2] and x0 <= col) or (seams[3] and x1 >= col + width)
            if touches:
                self._held[int(value)].append(polygon)
            else:
                complete.append((polygon, int(value)))
        self._emit(complete)

    def _emit(self, polygons: list) -> None:
        """Write ``(polygon in pixel coordinates, class id)`` pairs as features."""
        from shapely.affinity import affine_transform
        from shapely.geometry import mapping

        polygons = [(p, c, int(round(p.area))) for p, c in polygons if p.area >= self.min_pixels]
        if not polygons:
            return
        t = self._transform
        geometries = [mapping(p if t is None else affine_transform(p, [t.a, t.b, t.d, t.e, t.c, t.f]))
                      for p, _, _ in polygons]
        if self._crs is not None:
            from rasterio.warp import transform_geom

            geometries = transform_geom(self._crs, "EPSG:4326", geometries)
        for geometry, (_, class_id, pixels) in zip(geometries, polygons):
            feature = polygon_feature(geometry, class_id, self.class_names, pixels)
            self._file.write((",\n" if self._count else "") + json.dumps(feature))
            self._count += 1

    def close(self) -> None:
        """Merge the held polygons across seams, finish the file and rename it into place."""
        from shapely import unary_union

        for class_id in sorted(self._held):
            merged = unary_union(self._held[class_id])
            self._emit([(polygon, class_id) for polygon in getattr(merged, "geoms", [merged])])
        self._held.clear()
        self._file.write("\n]}\n")
        self._file.close()
        os.replace(self._tmp, self.path)


def write_polygons(labels_path: str, path: str, info: RasterInfo, class_names: Sequence[str],
                   min_pixels: int = 0) -> None:
    """GeoJSON polygons of the label raster ``labels_path`` (on ``info``'s grid) into ``path``."""
    from rasterio.windows import Window

    stream = PolygonStream(path, info, class_names, min_pixels)
    with open_rasterio(labels_path, "label raster") as src:
        nodata = int(src.nodata)
        for row in range(0, src.height, WINDOW):
            for col in range(0, src.width, WINDOW):
                window = Window(col, row, min(WINDOW, src.width - col), min(WINDOW, src.height - row))
                stream.add(src.read(1, window=window), row, col, nodata)
    stream.close()
