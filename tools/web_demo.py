#!/usr/bin/env python
"""A small web demo: upload an image, type class names, see the prediction over it.

    python tools/web_demo.py --config-file configs/quickstart.yaml --weights output/quickstart/model_final.pth
    # then open http://127.0.0.1:7860 in a browser

Standard library only (``http.server``): no extra dependency. Binds to 127.0.0.1 unless
``--host`` says otherwise (there is no authentication: do not expose it to a network you do
not trust). One request is segmented at a time. Any raster the demo reads is accepted
(PNG/JPEG, GeoTIFF/JP2 through rasterio); bands and scaling come from the form's Bands /
Scaling / Range fields, else from the config's ``INPUT.RASTER`` (KEY VALUE overrides, e.g.
``INPUT.RASTER.SCALING percentile``). A 16-bit or multi-band upload without them is answered
with what to fill in, naming the uploaded file.
Class names: one per line, commas inside a line separate sub-prompts.

Routes: ``GET /`` the form; ``POST /segment`` (multipart fields ``image``, ``classes``) an HTML
page with the overlay and legend; ``POST /segment?format=png`` the picture alone.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import email.parser
import email.policy
import html
import os
import sys
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import parse_qs, urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the demo's argument helpers
import ovrsis  # noqa: E402,F401  (compat shims before detectron2)
from demo import flag_hints, split_overrides  # noqa: E402
from ovrsis.data.raster import RasterError, RasterSettings  # noqa: E402
from ovrsis.data.vocabulary import display_name  # noqa: E402
from ovrsis.engine import report_user_errors  # noqa: E402
from ovrsis.errors import OVRSISError  # noqa: E402
from ovrsis.predictor import Predictor  # noqa: E402
from ovrsis.visualization import class_colors, figure_png, figure_with_legend, overlay  # noqa: E402

MAX_UPLOAD_BYTES = 64 * 1024 * 1024

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ovrsis demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}textarea{{width:100%}}
.error{{color:#b00}}</style></head>
<body><h1>Open-vocabulary segmentation</h1>
<form action="/segment" method="post" enctype="multipart/form-data">
<p><label>Image (PNG, JPEG, GeoTIFF, ...): <input type="file" name="image" required></label></p>
<p><label>Class names, one per line (commas separate synonyms):<br>
<textarea name="classes" rows="6">{classes}</textarea></label></p>
<fieldset><legend>16-bit, float or multi-band images (GeoTIFF, JP2)</legend>
<p><label>Bands for red, green, blue (1-based, e.g. <code>3 2 1</code>; one band: grey; empty: {bands}):
<input name="bands" value="{form_bands}" size="12"></label></p>
<p><label>Scaling to 0..255: <select name="scaling">{scaling_options}</select></label>
<label>Range for fixed scaling (e.g. <code>0 2500</code>): <input name="range" value="{form_range}" size="14"></label></p>
</fieldset>
<p><input type="submit" value="Segment"></p>
</form>
{result}
</body></html>
"""


SCALING_CHOICES = {
    "": "as the server's config",
    "percentile": "percentile: 2-98 % stretch per image",
    "fixed": "fixed: the Range below maps to 0..255",
    "auto": "auto: 8-bit images only",
}
# How the raster reader's config-key wording reads in the form (RasterSettings(key=FORM_KEY)).
FORM_KEY = "form"
FORM_FIELDS = {f"{FORM_KEY}.BANDS": "the Bands field", f"{FORM_KEY}.SCALING": "the Scaling field",
               f"{FORM_KEY}.RANGE": "the Range field", f"{FORM_KEY}.PERCENTILES": "the percentiles"}


def form_raster_settings(default: RasterSettings, fields: dict) -> RasterSettings:
    """The raster settings of one request: the server's (``INPUT.RASTER``) with the form's
    ``bands`` ("3 2 1" or "3,2,1"), ``scaling`` and ``range`` ("0 2500") where they are filled in.

    Raises:
        RasterError: a field that is not numbers, or settings the reader rejects (wording: the form's fields).
    """
    def text(name: str) -> str:
        return fields.get(name, (None, b""))[1].decode("utf-8").replace(",", " ").strip()

    changes = {}
    try:
        if text("bands"):
            changes["bands"] = tuple(int(b) for b in text("bands").split())
        if text("range"):
            changes["value_range"] = tuple(float(v) for v in text("range").split())
    except ValueError:
        raise RasterError(f"Bands must be whole numbers (e.g. 3 2 1) and Range two numbers (e.g. 0 2500); got "
                          f"bands {text('bands')!r}, range {text('range')!r}") from None
    if "value_range" in changes and len(changes["value_range"]) != 2:
        raise RasterError(f"Range takes two numbers, low and high (e.g. 0 2500), got {text('range')!r}")
    if text("scaling"):
        changes["scaling"] = text("scaling")
    try:
        return dataclasses.replace(default, key=FORM_KEY, **changes)
    except RasterError as err:
        raise RasterError(for_the_browser(str(err))) from None


def for_the_browser(message: str, upload: str = "", temp_path: str = "") -> str:
    """A reader/config message reworded for the web form: the upload's name instead of the
    server's temporary file, the form's fields instead of config keys."""
    if temp_path:
        message = message.replace(temp_path, upload)
    for key, field in FORM_FIELDS.items():
        message = message.replace(key, field)
    return message


def parse_multipart(content_type: str, body: bytes) -> dict:
    """Fields of a ``multipart/form-data`` body: name → ``(filename or None, bytes)``.

    Raises:
        ValueError: not multipart/form-data.
    """
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"expected multipart/form-data, got {content_type or 'no content type'}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class DemoHandler(BaseHTTPRequestHandler):
    """Serves the form and segments uploads with the server's predictor."""

    server: "DemoServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (http.server's signature)
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _page(self, status: HTTPStatus, result: str = "", classes: str = "", fields: Optional[dict] = None) -> None:
        def value(name: str) -> str:
            return html.escape((fields or {}).get(name, (None, b""))[1].decode("utf-8", "replace"))

        chosen = value("scaling")
        options = "".join(f'<option value="{k}"{" selected" if k == chosen else ""}>{html.escape(v)}</option>'
                          for k, v in SCALING_CHOICES.items())
        raster = self.server.predictor.raster
        bands = " ".join(map(str, raster.bands)) or "the file's RGB or grey band"
        text = PAGE.format(classes=html.escape(classes or "\n".join(self.server.default_classes)), result=result,
                           bands=html.escape(bands), form_bands=value("bands"), form_range=value("range"),
                           scaling_options=options)
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8")

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        if urlparse(self.path).path != "/":
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        self._page(HTTPStatus.OK)

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/segment":
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES:
            self._page(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       f'<p class="error">upload of {length} bytes exceeds {MAX_UPLOAD_BYTES} bytes</p>')
            return
        classes_text, fields = "", {}
        try:
            fields = parse_multipart(self.headers.get("Content-Type", ""), self.rfile.read(length))
            classes_text = fields.get("classes", (None, b""))[1].decode("utf-8")
            filename, data = fields.get("image", (None, b""))
            if not data:
                raise ValueError("no image uploaded")
            names = [line for line in classes_text.splitlines() if line.strip()]  # checked by the one rule
            raster = form_raster_settings(self.server.predictor.raster, fields)
            png, shares = self.server.segment(filename or "upload.png", data, names, raster)
        except (OVRSISError, ValueError) as err:
            self._page(HTTPStatus.BAD_REQUEST, f'<p class="error">{html.escape(str(err))}</p>', classes_text, fields)
            return
        if parse_qs(url.query).get("format") == ["png"]:
            self._send(HTTPStatus.OK, png, "image/png")
            return
        rows = "".join(f"<li>{html.escape(n)}: {100 * s:.1f}%</li>" for n, s in shares)
        result = (f'<h2>Result</h2><img id="result" alt="prediction" src="data:image/png;base64,'
                  f'{base64.b64encode(png).decode("ascii")}"><ul>{rows}</ul>')
        self._page(HTTPStatus.OK, result, classes_text, fields)


class DemoServer(ThreadingHTTPServer):
    """The HTTP server holding the predictor; requests are segmented one at a time."""

    daemon_threads = True

    def __init__(self, address: tuple, predictor: Predictor, default_classes: Sequence[str], quiet: bool = False):
        super().__init__(address, DemoHandler)
        self.predictor = predictor
        self.default_classes = list(default_classes)
        self.quiet = quiet
        self._lock = threading.Lock()

    def segment(self, filename: str, data: bytes, class_names: Sequence[str],
                raster: Optional[RasterSettings] = None) -> tuple:
        """Segment an uploaded file; returns ``(PNG bytes of overlay + legend, [(class, pixel share)])``.

        ``raster``: bands and scaling (default the config's ``INPUT.RASTER``). Errors name the
        upload (``filename``), never the server's temporary copy, and the form's fields.

        Raises:
            RasterError: an unreadable upload or one needing bands/scaling (worded for the form).
        """
        upload = Path(filename).name or "upload.png"
        suffix = Path(upload).suffix.lower() or ".png"
        with tempfile.TemporaryDirectory() as tmp, self._lock:
            path = os.path.join(tmp, "upload" + suffix)
            with open(path, "wb") as f:
                f.write(data)
            try:
                result = self.predictor.predict(path, class_names, raster)
            except RasterError as err:
                raise RasterError(for_the_browser(str(err), upload, path)) from None
        colors = class_colors(result.class_names)
        fig = figure_with_legend([overlay(result.image, result.labels, colors)], ["prediction"],
                                 result.class_names, colors, tile_inches=5.0)
        shares = np.bincount(result.labels.ravel(), minlength=len(result.class_names)) / result.labels.size
        return figure_png(fig), [(display_name(n), float(s)) for n, s in zip(result.class_names, shares)]


@flag_hints()
def main(argv: list[str] | None = None) -> int:
    arguments, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Config overrides go last, as KEY VALUE pairs.")
    parser.add_argument("--config-file", required=True, metavar="FILE", help="ovrsis config of the model")
    parser.add_argument("--weights", default=None, metavar="CKPT", help="checkpoint (default: MODEL.WEIGHTS)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: MODEL.DEVICE)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s; 0 = any free port)")
    parser.add_argument("--classes", nargs="+", default=["water", "vegetation", "bare soil, built-up area"],
                        metavar="NAME", help="class names pre-filled in the form")
    args = parser.parse_args(arguments)
    predictor = Predictor(args.config_file, args.weights, device=args.device, opts=overrides)
    server = DemoServer((args.host, args.port), predictor, args.classes)
    host, port = server.server_address[:2]
    print(f"ovrsis web demo on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(report_user_errors(main))
