#!/usr/bin/env python
"""Evaluate one checkpoint on a whole benchmark suite and write the combined table.

    python eval_scripts/run_benchmark.py --config-file CFG --suite v1-dlrsd MODEL.WEIGHTS model.pth
    python eval_scripts/run_benchmark.py --config-file CFG --suite v2 --num-gpus 4 MODEL.WEIGHTS model.pth
    python eval_scripts/run_benchmark.py --config-file CFG --datasets v1_uavid_all --protocol P-T MODEL.WEIGHTS m.pth
    python eval_scripts/run_benchmark.py --list

Each dataset is scored under its benchmark's protocol (``--protocol`` overrides it for all;
``--protocol config`` keeps the config's own inference keys). Results are saved per
dataset as they finish, under ``<output>/results/<dataset>.json``; a rerun skips every
dataset already scored with the same weights, model config and protocol (``--force``
redoes them), so an interrupted suite continues where it stopped. The table is written
to ``<output>/table.md`` and ``<output>/table.csv``. Datasets sharing a protocol share one
model, whose text embeddings are cached per vocabulary. ``--num-gpus N`` runs N processes
(CUDA, or gloo on CPU); ``torchrun`` works too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ovrsis  # noqa: F401  (compat shims before detectron2)
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm

import ovrsis.modeling  # noqa: F401  (registers the meta-architecture)
from ovrsis.checkpoint import OVRSISCheckpointer
from ovrsis.data.benchmarks import (PROTOCOLS, RECORDS, SUITES, InferenceProtocol, Suite, get_protocol, get_suite,
                                    inference_from_config)
from ovrsis.engine import Trainer, launch, report_user_errors, setup_cfg
from ovrsis.engine.cli import parse_args_with_overrides  # noqa: E402
from ovrsis.modeling.meta_arch import vocabulary_of
from ovrsis.modeling.text_templates import prompt_templates
from ovrsis.evaluation import OpenVocabSemSegEvaluator
from ovrsis.evaluation.benchmark_table import DatasetResult, to_csv, to_markdown
from ovrsis.evaluation.sem_seg_evaluator import json_safe
from ovrsis.errors import ConfigError

logger = logging.getLogger("ovrsis.benchmark")
CONFIG_PROTOCOL = "config"


def build_parser():
    parser = default_argument_parser(__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), help="benchmark table to produce")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="registered datasets (instead of a suite)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS) + [CONFIG_PROTOCOL],
                        help="inference protocol for every dataset (default: each benchmark's own)")
    parser.add_argument("--output", help="output folder (default: output/benchmarks/<suite>)")
    parser.add_argument("--method", default="ovrsis", help="row name in the paper-layout table")
    parser.add_argument("--force", action="store_true", help="re-evaluate datasets that already have results")
    parser.add_argument("--list", action="store_true", help="list suites, protocols and datasets, then exit")
    return parser


def resolve_suite(args) -> Suite:
    if args.datasets:
        return Suite(args.suite or "custom", "Selected datasets", tuple(args.datasets))
    if not args.suite:
        raise SystemExit("give --suite or --datasets (see --list)")
    return get_suite(args.suite)


def protocol_for(dataset: str, override: str | None, cfg: CfgNode) -> InferenceProtocol:
    """``--protocol``, else the benchmark record's default, else the config's own inference."""
    if override == CONFIG_PROTOCOL or (override is None and dataset not in RECORDS):
        return inference_from_config(cfg)
    return get_protocol(override or RECORDS[dataset].protocol)


def with_protocol(cfg: CfgNode, protocol: InferenceProtocol) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(protocol.config_overrides())
    cfg.freeze()
    return cfg


def fingerprint(cfg: CfgNode, protocol: InferenceProtocol) -> str:
    """What a saved result depends on: weights file, model config, protocol."""
    weights = cfg.MODEL.WEIGHTS
    stat = os.stat(weights) if weights and os.path.isfile(weights) else None
    identity = {"weights": os.path.abspath(weights) if weights else "",
                "weights_size": stat.st_size if stat else None, "weights_mtime": stat.st_mtime if stat else None,
                "model": cfg.MODEL.dump(), "templates": prompt_templates(cfg),
                "protocol": protocol.as_dict()}
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def result_path(output: str, dataset: str) -> str:
    return os.path.join(output, "results", f"{dataset}.json")


def load_result(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Atomic, so an interrupted run never leaves a half-written result that looks finished."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(json_safe(payload), f, indent=2, allow_nan=False)
    os.replace(tmp, path)


def evaluate_suite(cfg: CfgNode, suite: Suite, output: str, override: str | None, force: bool) -> None:
    plans = []
    for name in suite.datasets:
        protocol = protocol_for(name, override, cfg)
        key = fingerprint(with_protocol(cfg, protocol), protocol)
        saved = load_result(result_path(output, name))
        done = not force and saved is not None and saved.get("fingerprint") == key
        plans.append((name, protocol, key, done))
    comm.synchronize()  # every rank decided from the same files before anyone writes

    todo = [plan for plan in plans if not plan[3]]
    for name, protocol, _, done in plans:
        if done:
            logger.info("skip %s: already scored under %s (results/%s.json)", name, protocol.label, name)
    for protocol in _unique(p for _, p, _, _ in todo):
        protocol_cfg = with_protocol(cfg, protocol)
        try:
            model = Trainer.build_model(protocol_cfg)
        except ConfigError as err:
            if override is not None:
                raise
            names = ", ".join(name for name, p, _, _ in todo if p == protocol)
            raise ConfigError(f"{err} — under {protocol.label}, the benchmark's default protocol for {names}: "
                              f"choose one this model runs with --protocol (--protocol {CONFIG_PROTOCOL} keeps "
                              "the config's own inference)") from None
        if cfg.MODEL.WEIGHTS:
            OVRSISCheckpointer.from_config(cfg, model, save_dir=output).load(cfg.MODEL.WEIGHTS)
        elif getattr(model, "requires_weights", True):
            logger.warning("MODEL.WEIGHTS is empty: scoring a model whose trained parts are randomly initialised "
                           "(pass MODEL.WEIGHTS path/to/model_final.pth)")
        model.eval()
        for name, _, key, _ in (plan for plan in todo if plan[1] == protocol):
            index = suite.datasets.index(name) + 1
            images = len(DatasetCatalog.get(name))
            logger.info("[%d/%d] %s: %d images, protocol %s", index, len(suite.datasets), name, images,
                        protocol.describe())
            model.set_vocabulary(vocabulary_of(name))
            evaluator = OpenVocabSemSegEvaluator(name, distributed=True,
                                                 output_dir=os.path.join(output, "inference", name), inference=protocol)
            start = time.perf_counter()
            results = inference_on_dataset(model, Trainer.build_test_loader(protocol_cfg, name), evaluator)
            if comm.is_main_process():
                write_json(result_path(output, name), {
                    "dataset": name, "fingerprint": key, "weights": cfg.MODEL.WEIGHTS, "images": images,
                    "seconds": round(time.perf_counter() - start, 1), "protocol": evaluator.protocol,
                    "metrics": results["sem_seg"]})
                logger.info("[%d/%d] %s: mIoU %.2f (%s) -> %s", index, len(suite.datasets), name,
                            results["sem_seg"]["mIoU"], evaluator.protocol["label"], result_path(output, name))
        del model


def _unique(items) -> list:
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def write_tables(suite: Suite, output: str, method: str) -> str:
    results = []
    for name in suite.datasets:
        saved = load_result(result_path(output, name))
        if saved is None:
            raise RuntimeError(f"no result for {name} in {result_path(output, name)}")
        results.append(DatasetResult(name, saved["metrics"], saved["protocol"]))
    training = suite.training_dataset if suite.training_dataset in suite.datasets else None
    markdown = to_markdown(results, training, suite.title, suite.notes, method)
    with open(os.path.join(output, "table.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(output, "table.csv"), "w") as f:
        f.write(to_csv(results, training))
    return markdown


def main(args) -> str | None:
    suite = resolve_suite(args)
    output = args.output or os.path.join("output", "benchmarks", suite.name)
    cfg = setup_cfg(args.config_file, list(args.opts) + ["OUTPUT_DIR", output], args)
    evaluate_suite(cfg, suite, output, args.protocol, args.force)
    if not comm.is_main_process():
        return None
    markdown = write_tables(suite, output, args.method)
    print(f"\n{markdown}\nwritten: {os.path.join(output, 'table.md')}, {os.path.join(output, 'table.csv')}",
          flush=True)
    return markdown


def print_catalog() -> None:
    print("Suites:")
    for suite in SUITES.values():
        print(f"  {suite.name:16s} {suite.title}: {', '.join(suite.datasets)}")
    print("Protocols:")
    for protocol in PROTOCOLS.values():
        print(f"  {protocol.describe()}\n      {protocol.summary}")
    print("Datasets:")
    for record in RECORDS.values():
        print(f"  {record.name:26s} {record.benchmark}: {record.title} ({record.split}), {len(record.classes)} classes, "
              f"{record.protocol}")


def run(argv: Sequence[str] | None = None) -> None:
    args = parse_args_with_overrides(build_parser(), argv)  # KEY VALUE pairs may precede options
    if args.list:
        print_catalog()
        return
    timeout = report_user_errors(setup_cfg, args.config_file, args.opts).DIST.TIMEOUT_MINUTES
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,), timeout_minutes=timeout)


if __name__ == "__main__":
    run()
