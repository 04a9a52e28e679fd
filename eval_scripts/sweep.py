#!/usr/bin/env python
"""Ablation sweeps: a grid of config overrides × seeds, trained and scored run by run, in one table.

    python eval_scripts/sweep.py configs/sweeps/synthetic.yaml                 # CPU, a few minutes
    python eval_scripts/sweep.py configs/sweeps/synthetic.yaml --dry-run       # list runs, run nothing
    python eval_scripts/sweep.py configs/sweeps/ovrs_components.yaml --jobs 4 --gpus-per-run 2   # 8 local GPUs
    python eval_scripts/sweep.py configs/sweeps/gsnet_components.yaml --backend slurm \\
        --partition gpu --time 3-00:00:00 --gpus-per-node 4 --nodes 1         # one Slurm job per run
    python eval_scripts/sweep.py configs/sweeps/synthetic.yaml --table-only    # table from finished runs

The sweep file format is in configs/sweeps/README.md. Every run is validated before anything runs
(unknown key, value of the wrong type, a model that cannot be built, unknown dataset, suite or
protocol: the error names the key). Each run trains through train_net.py's code path and is
scored by eval_scripts/run_benchmark.py, in ``<output>/<run>/`` (resolved config
``sweep_config.yaml``, state ``sweep_run.json``, console output ``sweep.log``). A rerun skips
finished runs with the same resolved config, restarts interrupted or failed ones from scratch
(``--resume``: from their last checkpoint) and refuses a run folder made with a different config
(``--discard-changed`` deletes and reruns it). A failed run is reported and the others go on.
The table (mean ± std over seeds) goes to ``<output>/results.md`` and ``results.csv``, with
``plot_<axis>.png`` for numeric axes. Exit status: 0 when every run finished, 1 otherwise.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when not installed

from ovrsis.config import flatten_config  # noqa: E402
from ovrsis.engine.launch import report_user_errors  # noqa: E402
from ovrsis.sweep import spec as sweep_spec  # noqa: E402
from ovrsis.sweep.execute import (RunTask, check_backend, gpu_slots, job_finished, run_local,  # noqa: E402
                                  slurm_parameters, submit_slurm, visible_gpus)
from ovrsis.sweep.resolve import (base_config, check_config, check_evaluation, config_identity,  # noqa: E402
                                  evaluation_datasets, resolve_config, yaml_data)
from ovrsis.sweep.state import (CHANGED, CONFIG_FILE, EVALUATE, FAILED, FINISHED, INTERRUPTED, NEW,  # noqa: E402
                                QUEUED, classify, evaluation_key, read_state, write_state)
from ovrsis.sweep.table import RowResult, plot_axis, run_cells, to_csv, to_markdown  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s SWEEP [options] [KEY VALUE ...]",
                                     epilog="KEY VALUE pairs (anywhere after SWEEP) are config overrides for every "
                                            "run, e.g. MODEL.DINO.WEIGHTS /data/RSIB.pth")
    parser.add_argument("sweep", help="sweep file (configs/sweeps/*.yaml)")
    parser.add_argument("--output", help="sweep folder (default: output/sweeps/<sweep name>)")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the runs and their overrides, exit")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted or failed runs from their last checkpoint (default: restart them "
                             "from scratch, which reproduces an uninterrupted sweep exactly on CPU)")
    parser.add_argument("--discard-changed", action="store_true",
                        help="delete run folders made with a different config and run them again (default: stop)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="run only runs whose name matches (fnmatch)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; write the table from finished runs")
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    local = parser.add_argument_group("local backend")
    local.add_argument("--jobs", type=int, default=1, help="runs at once (each on its own GPU subset)")
    local.add_argument("--gpus-per-run", type=int, help="GPUs per run (default: the sweep's resources.gpus, else 1)")
    local.add_argument("--gpus", help="comma-separated GPU ids to share out (default: CUDA_VISIBLE_DEVICES or all)")
    slurm = parser.add_argument_group("slurm backend (submitit; overrides the sweep file's slurm section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="minutes, H:MM:SS or D-HH:MM:SS (default 3 days)")
    slurm.add_argument("--nodes", type=int)
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--constraint")
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs, then write the table")
    slurm.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"), default="slurm",
                       help=argparse.SUPPRESS)  # submitit's local executors, for tests without a cluster
    return parser


class Plan:
    """A run with its resolved config, folder, identity and what this invocation does with it."""

    def __init__(self, run: sweep_spec.Run, cfg: Any, run_dir: str, mode: str, datasets: tuple[str, ...],
                 sweep: sweep_spec.Sweep) -> None:
        self.run, self.cfg, self.run_dir, self.datasets = run, cfg, run_dir, datasets
        self.identity = f"{mode}:{config_identity(cfg)}"
        self.evaluation = evaluation_key(datasets, sweep.protocol)
        self.stored = read_state(run_dir)
        self.action = classify(self.stored, self.identity, self.evaluation)


def plan_runs(sweep: sweep_spec.Sweep, output: str, device: str | None = None) -> list[Plan]:
    """Expand, resolve and validate every run (all before anything runs); ``device``: where runs execute."""
    base = base_config(sweep)
    runs = sweep.expand(int(base.SEED))
    built: dict[str, str] = {}
    plans = []
    for i, run in enumerate(runs):
        run_dir = os.path.abspath(os.path.join(output, run.name))
        cfg = resolve_config(sweep, run, run_dir, base, device)
        if i == 0 or plans[-1].run.row != run.row:  # the seeds of a row share these checks
            check_config(cfg, f"{sweep.path}: run {run.row}", built)
            check_evaluation(sweep, cfg)
        plans.append(Plan(run, cfg, run_dir, sweep.mode, evaluation_datasets(sweep, cfg), sweep))
    return plans


def changed_keys(plan: Plan) -> list[str]:
    """Keys whose stored value differs from the sweep's (for the 'changed' message)."""
    try:
        import yaml

        with open(os.path.join(plan.run_dir, CONFIG_FILE)) as f:
            old = flatten_config(yaml.safe_load(f) or {})
    except (OSError, ValueError):
        return []
    new = flatten_config(yaml_data(plan.cfg))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "OUTPUT_DIR")


def describe(plan: Plan, resume: bool, discard_changed: bool) -> str:
    return {NEW: "run", FINISHED: "skip (finished)", EVALUATE: "evaluate only (trained)",
            INTERRUPTED: "resume" if resume else "restart (interrupted)",
            FAILED: "resume" if resume else "restart (failed)",
            CHANGED: "discard + run" if discard_changed else "other config: stop",
            QUEUED: "skip (queued on Slurm)"}[plan.action]


def prepare(plan: Plan, sweep: sweep_spec.Sweep, resume: bool) -> None:
    """Make the run folder ready: fresh for new/restarted/changed runs, kept for resumed/evaluate-only
    ones; write the resolved config and the plan."""
    fresh = plan.action in (NEW, CHANGED) or (plan.action in (INTERRUPTED, FAILED) and not resume)
    if fresh and os.path.isdir(plan.run_dir):
        shutil.rmtree(plan.run_dir)
    os.makedirs(plan.run_dir, exist_ok=True)
    with open(os.path.join(plan.run_dir, CONFIG_FILE), "w") as f:
        f.write(plan.cfg.dump())
    kept = {} if fresh else (read_state(plan.run_dir) or {})
    write_state(plan.run_dir, {
        "name": plan.run.name, "row": plan.run.row, "seed": plan.run.seed,
        "overrides": [[k, v] for k, v in plan.run.overrides], "identity": plan.identity, "mode": sweep.mode,
        "suite": sweep.suite, "datasets": list(plan.datasets), "protocol": sweep.protocol,
        "evaluation": plan.evaluation, "status": "pending", "trained": bool(kept.get("trained")),
        "results": {}, "error": ""})


def settings_of(plan: Plan, sweep: sweep_spec.Sweep) -> dict[str, Any]:
    """The resolved values of the keys that vary across rows, by key (tuples as lists)."""
    from ovrsis.sweep.resolve import _get

    out = {}
    for key in sweep.labels():
        value = _get(plan.cfg, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def write_table(sweep: sweep_spec.Sweep, plans: Sequence[Plan], output: str) -> str:
    """results.md, results.csv and plots from the runs' stored states; returns the Markdown."""
    from ovrsis.data.benchmarks import SUITES

    training = SUITES[sweep.suite].training_dataset if sweep.suite else None
    labels = sweep.labels()
    rows: dict[str, RowResult] = {}
    values: dict[str, dict[str, Any]] = {}
    for plan in plans:
        settings = {labels[key]: value for key, value in settings_of(plan, sweep).items()}
        row = rows.setdefault(plan.run.row, RowResult(plan.run.row, settings, 0))
        values[plan.run.row] = settings
        row.runs += 1
        state = read_state(plan.run_dir) or {}
        if state.get("status") == "finished" and state.get("identity") == plan.identity and state.get("results"):
            row.per_seed[plan.run.seed] = run_cells(state["results"], sweep.metrics, training)
        elif state.get("status") == "failed":
            row.failed.append(plan.run.name)
    shown = [label for label in labels.values()
             if len({repr(v.get(label)) for v in values.values()}) > 1 or len(values) == 1 and sweep.axes]
    for row in rows.values():
        row.settings = {k: v for k, v in row.settings.items() if k in shown}
    what = f"suite {sweep.suite}" if sweep.suite else ", ".join(plans[0].datasets) if plans else ""
    seeds = len(sweep.seeds) or 1
    title = f"Sweep {sweep.name}: {len(rows)} rows × {seeds} seed{'s' if seeds > 1 else ''} ({what})"
    markdown = to_markdown(list(rows.values()), shown, title,
                           notes=(f"Base config: {os.path.relpath(sweep.base, sweep_spec.REPO_ROOT)}; protocol: "
                                  f"{sweep.protocol or 'each benchmark dataset’s own (config for others)'}.",))
    os.makedirs(output, exist_ok=True)
    Path(output, "results.md").write_text(markdown)
    Path(output, "results.csv").write_text(to_csv(list(rows.values()), shown))
    datasets = plans[0].datasets if plans else ()
    column = f"{'mean' if len(datasets) > 1 else datasets[0]}/{sweep.metrics[0]}" if datasets else ""
    for axis in sweep.axes:
        if axis.numeric and axis.label in shown and column:
            plot_axis(list(rows.values()), axis.label, column, os.path.join(output, f"plot_{axis.label}.png"))
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        from ovrsis.sweep import worker

        worker.main(argv[1:])
        return 0
    args, opts = build_parser().parse_known_args(argv)
    sweep = sweep_spec.load_sweep(args.sweep)
    sweep.add_overrides(opts)
    output = os.path.abspath(args.output or os.path.join("output", "sweeps", sweep.name))
    gpus_per_run = args.gpus_per_run or sweep.gpus or 1
    gpus: list[str] = []
    settings: dict[str, Any] = {}
    check_backend(args.backend, args.submitit_cluster)  # before the (slow) validation of the runs
    if args.backend == "local":
        gpus = [g for g in args.gpus.split(",") if g] if args.gpus is not None else visible_gpus()
        device = "cuda" if gpus else "cpu"
        try:
            slots = gpu_slots(gpus, gpus_per_run, args.jobs)
        except ValueError as exc:
            raise sweep_spec.SweepError(f"--gpus-per-run {gpus_per_run}: {exc}") from None
    else:
        settings = {**sweep.slurm, **{k: v for k, v in {
            "partition": args.partition, "time": args.time, "nodes": args.nodes, "gpus_per_node": args.gpus_per_node,
            "cpus_per_task": args.cpus_per_task, "mem_gb": args.mem_gb, "account": args.account, "qos": args.qos,
            "constraint": args.constraint}.items() if v is not None}}
        settings.setdefault("gpus_per_node", gpus_per_run)
        try:
            slurm_parameters(settings, sweep.name)  # bad time/values fail before anything runs
        except (ValueError, TypeError) as exc:
            raise sweep_spec.SweepError(f"Slurm settings (command line / the sweep's slurm section): {exc}") from None
        device = "cuda" if int(settings["gpus_per_node"]) > 0 else "cpu"
    all_plans = plan_runs(sweep, output, device)
    plans = all_plans if not args.only else [p for p in all_plans if any(fnmatch.fnmatch(p.run.name, pat)
                                                                        for pat in args.only)]
    if args.only and not plans:
        raise sweep_spec.SweepError(f"--only {args.only}: no run matches; runs: {[p.run.name for p in all_plans]}")
    slurm_folder = os.path.join(output, "slurm")
    for plan in plans:  # a queued Slurm job that has ended (or was never submitted) was interrupted
        job_id = str(plan.stored.get("job_id", "")) if plan.stored else ""
        if plan.action == QUEUED and (not job_id or job_finished(job_id, slurm_folder)):
            plan.action = INTERRUPTED
    changed = [p for p in plans if p.action == CHANGED]
    if changed and not args.discard_changed and not args.dry_run and not args.table_only:
        details = "\n".join(f"  {p.run.name}: {', '.join(changed_keys(p)[:8]) or 'mode/config'}" for p in changed)
        raise sweep_spec.SweepError(
            f"{len(changed)} run folder(s) in {output} were made with a different config (keys that differ):\n"
            f"{details}\nResults of different configs are never mixed: use another --output, or "
            "--discard-changed to delete these runs and run them again")

    todo = [p for p in plans if p.action not in (FINISHED, QUEUED)]
    print(f"Sweep {sweep.name}: {len(all_plans)} runs ({len(plans)} selected), {len(todo)} to run; output {output}")
    width = max(len(p.run.name) for p in plans)
    for plan in plans:
        swept = " ".join(f"{key}={sweep_spec.format_value(value)}" for key, value in settings_of(plan, sweep).items())
        action = describe(plan, args.resume, args.discard_changed)
        print(f"  {plan.run.name:{width}s}  {action:24s} SEED={plan.run.seed} {swept}")
    if args.dry_run:
        return 0
    if args.table_only:
        print(write_table(sweep, all_plans, output))
        return 0

    if args.backend == "local":
        by_name = {p.run.name: p for p in todo}
        tasks = [RunTask(p.run.name, p.run_dir, p.datasets, num_gpus=gpus_per_run if gpus else 1,
                         resume=args.resume and p.action in (INTERRUPTED, FAILED)) for p in todo]
        counter = {"done": 0}

        def report(event: str, task: RunTask, state: dict[str, Any] | None) -> None:
            if event == "start":
                prepare(by_name[task.name], sweep, args.resume)
                print(f"[{time.strftime('%H:%M:%S')}] start    {task.name}", flush=True)
                return
            counter["done"] += 1
            prefix = f"[{time.strftime('%H:%M:%S')}] {counter['done']}/{len(tasks)}"
            if event == "finished":
                scores = ", ".join(f"{d} {r['metrics'].get(sweep.metrics[0], float('nan')):.2f}"
                                   for d, r in (state or {}).get("results", {}).items())
                print(f"{prefix} finished {task.name} in {(state or {}).get('seconds', 0):.0f} s: "
                      f"{sweep.metrics[0]} {scores}", flush=True)
            elif event == "busy":
                print(f"{prefix} busy     {task.name}: another sweep process is running it; skipped", flush=True)
            else:
                print(f"{prefix} FAILED   {task.name}: {(state or {}).get('error', '')}", flush=True)

        run_local(tasks, output, slots, report)
    else:
        for plan in todo:
            prepare(plan, sweep, args.resume)
        tasks = [RunTask(p.run.name, p.run_dir, p.datasets, num_gpus=int(settings["gpus_per_node"]),
                         num_machines=int(settings.get("nodes") or 1),
                         resume=args.resume and p.action in (INTERRUPTED, FAILED)) for p in todo]
        jobs = submit_slurm(tasks, slurm_folder, settings, sweep.name, cluster=args.submitit_cluster)
        for task, job in zip(tasks, jobs):
            print(f"  submitted {task.name}: job {job.job_id}")
        if not args.wait:
            print(f"Jobs' logs: {slurm_folder}. When they end: python eval_scripts/sweep.py {args.sweep} --table-only"
                  + (f" --output {args.output}" if args.output else ""))
            return 0
        for task, job in zip(tasks, jobs):
            try:
                job.result()
            except Exception as exc:  # the job's own failure is in the run's state
                print(f"  job {job.job_id} ({task.name}) ended with an error: {str(exc).splitlines()[-1][:300]}")
    markdown = write_table(sweep, all_plans, output)
    print(f"\n{markdown}\nwritten: {os.path.join(output, 'results.md')}, {os.path.join(output, 'results.csv')}",
          flush=True)
    states = [read_state(p.run_dir) or {} for p in plans]
    return 0 if all(s.get("status") == "finished" for s in states) else 1


def run() -> None:
    sys.exit(report_user_errors(main))


if __name__ == "__main__":
    run()
