"""One class-name rule at every entry point: names are normalised (surrounding and repeated
whitespace) and two spellings of one class (``water`` / ``"Water "``) are rejected the same way,
whether they come from a list, a class file, a config's DATASETS.REGISTER entry, a benchmark
record, a model's ``set_vocabulary``, the Predictor, ``tools/demo.py`` or the web demo."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.data import MetadataCatalog

from ovrsis.data.benchmarks.records import DatasetRecord, register_records
from ovrsis.data.vocabulary import check_class_names, class_key, load_class_names, normalize_class_name
from ovrsis.errors import ConfigError
from tool_modules import import_tools

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
CLASH = ["water", "tree", "Water "]  # class 2 repeats class 0 up to case and spaces
DUPLICATE = "duplicate class names: 'water' (class 0) and 'Water ' (class 2)"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Tiny models only (see conftest.py)."""


@pytest.fixture(scope="module")
def predictor():
    return ovrsis.Predictor(QUICKSTART, device="cpu")


@pytest.fixture(scope="module")
def tools():
    return import_tools("demo", "web_demo")


def test_normalisation_and_class_key():
    assert normalize_class_name("  Water\t body \n") == "Water body"
    assert class_key("Road,Parking  lot ") == class_key("road, parking lot") == ("road", "parking lot")
    assert class_key(r"a\, b") != class_key("a, b")  # an escaped comma stays inside the prompt
    assert check_class_names([" water ", "tree,  forest"]) == ["water", "tree, forest"]
    for names, match in ((["road", "ROAD"], "'road' .* and 'ROAD'"),
                         (["road, lane", "Road,lane"], "same class"),
                         ([], "empty"), (["a", " "], "empty name"), (["a", 3], "must be strings")):
        with pytest.raises(ConfigError, match=match):
            check_class_names(names)


def _config_entry(tmp_path: Path, classes, seen=None) -> list:
    entry = {"IMAGE_ROOT": str(tmp_path), "MASK_ROOT": str(tmp_path), "CLASS_NAMES": classes}
    if seen is not None:
        entry["SEEN_CLASSES"] = seen
    return ["DATASETS.REGISTER", str({"names_check": entry})]


def _via_list(names, tmp_path, tools, predictor):
    return load_class_names(names)


def _via_txt(names, tmp_path, tools, predictor):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(names) + "\n")
    return load_class_names(path)


def _via_json(names, tmp_path, tools, predictor):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(names))
    return load_class_names(str(path))


def _via_config(names, tmp_path, tools, predictor):
    from ovrsis.engine import setup_cfg

    setup_cfg(QUICKSTART, ["MODEL.DEVICE", "cpu", *_config_entry(tmp_path, list(names))])
    return MetadataCatalog.get("names_check").stuff_classes


def _via_record(names, tmp_path, tools, predictor):
    register_records([DatasetRecord("names_record", "test", "test", "all", "imgs", "masks", tuple(names), "none")],
                     str(tmp_path))
    return MetadataCatalog.get("names_record").stuff_classes


def _via_record_prompts(names, tmp_path, tools, predictor):
    classes = tuple(f"c{i}" for i in range(len(names)))
    register_records([DatasetRecord("names_prompts", "test", "test", "all", "imgs", "masks", classes, "none",
                                    prompts=tuple(names))], str(tmp_path))
    return MetadataCatalog.get("names_prompts").prompt_classes


def _via_model(names, tmp_path, tools, predictor):
    predictor.model.set_vocabulary(names)
    return predictor.model.test_classes


def _via_model_training(names, tmp_path, tools, predictor):
    predictor.model.set_vocabulary(names, train=True)
    return predictor.model.train_classes


def _via_predictor(names, tmp_path, tools, predictor):
    return predictor.predict(np.zeros((16, 16, 3), np.uint8), names).class_names


def _via_demo(names, tmp_path, tools, predictor):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "demo"
    assert tools["demo"].main([str(image), "--config-file", QUICKSTART, "--classes", *names,
                               "--output", str(out), "MODEL.DEVICE", "cpu"]) == 0
    return [entry["class"] for entry in json.loads((out / "classes.json").read_text())]


def _via_web_demo(names, tmp_path, tools, predictor):
    """The web demo answers a bad vocabulary with the same message, as a 400 page."""
    server = tools["web_demo"].DemoServer(("127.0.0.1", 0), predictor, ["water"], quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
        boundary = "names-check"
        body = b"".join([
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode(), png.tobytes(), b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="classes"\r\n\r\n'.encode(),
            "\n".join(names).encode(), f"\r\n--{boundary}--\r\n".encode()])
        request = urllib.request.Request(f"http://{host}:{port}/segment", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            page = urllib.request.urlopen(request, timeout=30).read().decode()
        except urllib.error.HTTPError as err:
            import html

            raise ConfigError(html.unescape(err.read().decode())) from None
        return [line.split(":")[0] for line in page.split("<li>")[1:]]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


ENTRY_POINTS = [_via_list, _via_txt, _via_json, _via_config, _via_record, _via_record_prompts, _via_model,
                _via_model_training, _via_predictor, _via_demo, _via_web_demo]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__[5:])
def test_every_entry_point_rejects_two_spellings_of_one_class(entry, tmp_path, tools, predictor):
    with pytest.raises(ConfigError, match=DUPLICATE.replace("(", r"\(").replace(")", r"\)")):
        entry(CLASH, tmp_path, tools, predictor)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__[5:])
def test_every_entry_point_normalises_spaces(entry, tmp_path, tools, predictor):
    names = entry([" water ", "tree"], tmp_path, tools, predictor)
    assert [str(n) for n in names][:2] == ["water", "tree"] or list(names) == ["c0", "c1"]


def test_seen_classes_match_the_class_list_by_key(tmp_path):
    from ovrsis.engine import setup_cfg

    setup_cfg(QUICKSTART, ["MODEL.DEVICE", "cpu", *_config_entry(tmp_path, ["water", "tree"], ["Water "])])
    assert MetadataCatalog.get("names_check").seen_classes == ["water"]
    with pytest.raises(ConfigError, match="not in its class list"):
        setup_cfg(QUICKSTART, ["MODEL.DEVICE", "cpu", *_config_entry(tmp_path, ["water", "tree"], ["road"])])
