#!/usr/bin/env python
"""How a CPU job degrades next to other work: slowdown ÷ fair share with N busy processes.

For each N in ``--busy`` (default 0 1 2 4) it starts N busy single-thread processes (a Python
loop: pure CPU, no memory traffic; ``--duty`` makes them busy only part of every 100 ms), then
runs the workload in a fresh interpreter under each ``--setting`` (environment variables applied
*before* torch loads, which is when OpenMP reads them), alternating settings within every round
so slow drifts of a shared machine hit all of them. Default settings: ``before`` (the libraries'
defaults, ``OVRSIS_CPU_DEFAULTS=0``), ``fixed`` (a fixed thread count with passive OpenMP
waiting, ``OVRSIS_ADAPTIVE_THREADS=0``) and ``after`` (ovrsis' defaults: adaptive threads,
``ovrsis/runtime.py``). The workload is the quickstart model (``configs/quickstart.yaml``: tiny
CLIP CAT-Seg) built with random weights: ``--steps`` training steps (forward + backward + the
trainer's optimizer step, batch ``SOLVER.IMS_PER_BATCH`` at ``INPUT.CROP.SIZE``) and
``--infer-iters`` whole-image inferences, after one warm-up call each; the median wall time of
each is kept, and the intra-op thread count at the end.

Columns: the time, the slowdown = time / quiet time (``--quiet-train-ms`` / ``--quiet-infer-ms``
when given, else the best quiet estimate of the run: the smallest N = 0 process CPU time per
call divided by the job's threads, i.e. the work spread perfectly over its threads — a shared
machine is never quiet, and its N = 0 wall time already includes the other users), the fair
share = the slowdown due to a job with T runnable threads among R runnable threads on C cores,
max(1, R / C) with R the larger of N × duty + T and the 1-minute load average read when the run
ends (other users' processes count too on a shared machine), and their ratio (goal ≤ 1.5).

    python tools/contention_benchmark.py                       # before / fixed / after, N = 0 1 2 4
    python tools/contention_benchmark.py --busy 0 2 --rounds 3 --steps 5
    python tools/contention_benchmark.py --duty 0.5            # neighbours busy half the time
    python tools/contention_benchmark.py --setting "spin:OMP_WAIT_POLICY=ACTIVE"
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
# "before": the libraries' own defaults (OpenMP spin-waits, every process takes every core);
# "fixed": ovrsis with a fixed thread count (passive waiting); "after": ovrsis' defaults
# (adaptive threads, ovrsis/runtime.py)
DEFAULT_SETTINGS = {"before": {"OVRSIS_CPU_DEFAULTS": "0"}, "fixed": {"OVRSIS_ADAPTIVE_THREADS": "0"}, "after": {}}
# variables that would override a setting: removed from the children's environment
CONTROLLED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OVRSIS_CPU_DEFAULTS",
              "OVRSIS_ADAPTIVE_THREADS")


def parse_setting(text: str) -> tuple:
    """``name:VAR=VALUE,VAR=VALUE`` → (name, {VAR: VALUE})."""
    name, _, assignments = text.partition(":")
    env = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"setting {text!r}: expected name:VAR=VALUE,...")
        env[key] = value
    if not name:
        raise argparse.ArgumentTypeError(f"setting {text!r}: missing name")
    return name, env


# a pure-CPU loop, busy for DUTY of every 100 ms, that ends when its parent does (no orphans if
# the benchmark is killed)
BUSY_LOOP = ("import os, sys, time\nparent, duty = os.getppid(), float(sys.argv[1])\n"
             "while os.getppid() == parent:\n"
             "    end = time.monotonic() + 0.1 * duty\n"
             "    while time.monotonic() < end:\n        pass\n"
             "    if duty < 1:\n        time.sleep(0.1 * (1 - duty))\n")


def busy_processes(n: int, duty: float = 1.0) -> List[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(duty)]) for _ in range(n)]


def stop(processes: Sequence[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def run_workload(env_overrides: Dict[str, str], args: argparse.Namespace) -> Dict[str, float]:
    """The workload in a fresh interpreter with ``env_overrides``; its JSON result."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env.update(env_overrides)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(args.steps),
           "--infer-iters", str(args.infer_iters), "--config-file", args.config_file]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"workload failed ({env_overrides}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(args: argparse.Namespace) -> None:
    """Child: time training steps and inferences of the quickstart model; print one JSON line."""
    sys.path.insert(0, str(REPO / "tools"))
    import ovrsis  # noqa: F401  (process defaults, compat shims: before torch)
    import torch
    from _common import build, dummy_vocabulary, load_cfg
    from benchmark import bench_inference, bench_train

    cfg = load_cfg(args.config_file, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build(cfg)
    classes = dummy_vocabulary(8)
    model.set_vocabulary(classes)
    size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST)
    train = bench_train(model, cfg, classes, cfg.SOLVER.IMS_PER_BATCH, 1, args.steps)
    infer = bench_inference(model, "whole", size, 1, args.infer_iters)
    print(json.dumps({"train_ms": train["median_ms"], "infer_ms": infer["median_ms"],
                      "train_cpu_ms": train["median_cpu_ms"], "infer_cpu_ms": infer["median_cpu_ms"],
                      "threads": torch.get_num_threads(), "load": os.getloadavg()[0],
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}))


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2, 4], help="busy processes (0 = quiet)")
    parser.add_argument("--setting", type=parse_setting, action="append", default=None, metavar="NAME:VAR=VAL,...",
                        help="an environment to compare (repeatable; default: before = the libraries' defaults "
                             "(OVRSIS_CPU_DEFAULTS=0), fixed = OVRSIS_ADAPTIVE_THREADS=0, after = ovrsis' defaults)")
    parser.add_argument("--duty", type=float, default=1.0,
                        help="fraction of every 100 ms each busy process computes (default 1: always busy)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per N (median kept)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    parser.add_argument("--infer-iters", type=int, default=20, help="timed inferences per run")
    parser.add_argument("--quiet-train-ms", type=float, default=0.0, help="quiet reference (default: from CPU time)")
    parser.add_argument("--quiet-infer-ms", type=float, default=0.0, help="quiet reference (default: from CPU time)")
    parser.add_argument("--config-file", default=str(REPO / "configs" / "quickstart.yaml"))
    parser.add_argument("--json", default="", help="also write the rows here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return []
    if 0 not in args.busy:
        parser.error("--busy must include 0 (the quiet reference)")
    settings = dict(args.setting) if args.setting else DEFAULT_SETTINGS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    raw: Dict[tuple, List[Dict]] = {}
    for n in sorted(args.busy):
        procs = busy_processes(n, args.duty)
        try:
            time.sleep(0.5)
            for r in range(args.rounds):
                order = list(settings) if r % 2 == 0 else list(reversed(settings))
                for name in order:
                    result = run_workload(settings[name], args)
                    raw.setdefault((name, n), []).append(result)
                    print(f"N={n} {name:<10} train {result['train_ms']:8.1f} ms  infer {result['infer_ms']:7.1f} ms  "
                          f"threads {result['threads']}  load {result['load']:.1f}", flush=True)
        finally:
            stop(procs)
    rows = []
    best = {k: min(statistics.median(r[k.replace("_ms", "_cpu_ms")] / r["threads"] for r in raw[(name, 0)])
                   for name in settings) for k in ("train_ms", "infer_ms")}
    quiet = {"train_ms": args.quiet_train_ms or best["train_ms"], "infer_ms": args.quiet_infer_ms or best["infer_ms"]}
    for name in settings:
        threads = raw[(name, 0)][0]["threads"]
        for n in sorted(args.busy):
            runs = raw[(name, n)]
            load = statistics.median(r["load"] for r in runs)
            fair = max(1.0, max(n * args.duty + threads, load) / cores)
            row = {"setting": name, "busy": n, "threads": threads, "cores": cores, "load": load, "fair_share": fair,
                   "threads_at_end": statistics.median(r["threads"] for r in runs)}
            for k in ("train_ms", "infer_ms"):
                t = statistics.median(r[k] for r in runs)
                row[k] = t
                row[k.replace("_ms", "_slowdown")] = t / quiet[k]
                row[k.replace("_ms", "_ratio")] = t / quiet[k] / fair
            rows.append(row)
    print(f"\nquiet reference: train {quiet['train_ms']:.0f} ms, inference {quiet['infer_ms']:.1f} ms; {cores} cores")
    print("| setting | N busy | load avg | fair share | train step (ms) | slowdown | ÷ fair share | inference (ms) | "
          "slowdown | ÷ fair share | threads at the end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['busy']} | {r['load']:.1f} | {r['fair_share']:.1f} | {r['train_ms']:.0f} | "
              f"{r['train_slowdown']:.1f} | {r['train_ratio']:.2f} | {r['infer_ms']:.1f} | {r['infer_slowdown']:.1f} | "
              f"{r['infer_ratio']:.2f} | {r['threads_at_end']:g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
