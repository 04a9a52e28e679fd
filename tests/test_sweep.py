"""Ablation sweeps: expansion and names, validation errors, aggregation, resume rules, the local and
Slurm (submitit) backends, and the tiny synthetic sweep end to end."""
from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "eval_scripts"))

import sweep as sweep_cli  # noqa: E402  (eval_scripts/sweep.py)

from ovrsis.sweep.execute import (RunLock, RunTask, _submitit_rendezvous, gpu_slots,  # noqa: E402
                                  parse_minutes, run_local, slurm_parameters)
from ovrsis.sweep import resolve  # noqa: E402
from ovrsis.sweep.spec import SweepError, format_value, load_sweep  # noqa: E402
from ovrsis.sweep.state import (CHANGED, EVALUATE, FAILED, FINISHED, INTERRUPTED, NEW, QUEUED,  # noqa: E402
                                classify, read_state, write_state)
from ovrsis.sweep.table import RowResult, mean_std, run_cells, to_csv, to_markdown  # noqa: E402
from ovrsis.sweep.worker import BENCHMARK_SCRIPT, benchmark_argv, load_script  # noqa: E402

CI_SWEEP = REPO / "configs" / "sweeps" / "synthetic_ci.yaml"


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: configs/quickstart.yaml\n{text}")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVRSIS_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------- expansion and names
def test_runs_grid_zip_and_seeds_expand_in_order_with_stable_names(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, """
overrides: {SOLVER.MAX_ITER: 10}
runs:
  catseg: {}
  ovrs: {MODEL.COST.ROTATIONS: [0, 1, 2, 3], MODEL.DECODER.GUIDANCE_ATTENTION: true}
grid:
  SOLVER.BASE_LR: {name: lr, values: [0.001, 0.0002]}
zip:
  MODEL.CLIP.GUIDANCE_LAYERS: [[1, 2], [0, 1]]
  MODEL.DINO.GUIDANCE_LAYERS: [[3, 7], [2, 5]]
seeds: 2
"""))
    runs = sweep.expand()
    assert len(runs) == 2 * 2 * 2 * 2
    assert [r.name for r in runs[:4]] == [
        "catseg__lr=0.001__clip.guidance_layers=1-2__dino.guidance_layers=3-7__seed0",
        "catseg__lr=0.001__clip.guidance_layers=1-2__dino.guidance_layers=3-7__seed1",
        "catseg__lr=0.001__clip.guidance_layers=0-1__dino.guidance_layers=2-5__seed0",
        "catseg__lr=0.001__clip.guidance_layers=0-1__dino.guidance_layers=2-5__seed1",
    ]
    assert runs[8].row == "ovrs__lr=0.001__clip.guidance_layers=1-2__dino.guidance_layers=3-7"
    overrides = dict(runs[8].overrides)
    assert overrides == {"SOLVER.MAX_ITER": 10, "MODEL.COST.ROTATIONS": [0, 1, 2, 3],
                         "MODEL.DECODER.GUIDANCE_ATTENTION": True, "SOLVER.BASE_LR": 0.001,
                         "MODEL.CLIP.GUIDANCE_LAYERS": [1, 2], "MODEL.DINO.GUIDANCE_LAYERS": [3, 7]}
    assert [r.seed for r in runs[:2]] == [0, 1]
    assert sweep.expand() == runs  # stable
    assert sweep.labels()["MODEL.COST.ROTATIONS"] == "rotations"
    assert sweep.labels()["MODEL.DECODER.GUIDANCE_ATTENTION"] == "guidance_attention"


def test_x_fields_hold_yaml_anchors_that_runs_merge(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, """
x-small: &small {SOLVER.MAX_ITER: 5, SOLVER.IMS_PER_BATCH: 2}
runs:
  a: {<<: *small, SOLVER.BASE_LR: 0.1}
  b: {<<: *small, SOLVER.MAX_ITER: 7}
"""))
    a, b = sweep.expand()
    assert dict(a.overrides) == {"SOLVER.MAX_ITER": 5, "SOLVER.IMS_PER_BATCH": 2, "SOLVER.BASE_LR": 0.1}
    assert dict(b.overrides) == {"SOLVER.MAX_ITER": 7, "SOLVER.IMS_PER_BATCH": 2}


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_name_only_existing_keys_with_fitting_values(path, tmp_path):
    """Every shipped sweep expands and resolves (keys exist, values fit); the model-build checks run in
    ``sweep.py --dry-run`` (seconds per row for the full-size models, so not here)."""
    sweep = load_sweep(path)
    base = resolve.base_config(sweep)
    runs = sweep.expand(int(base.SEED))
    assert runs and len({r.name for r in runs}) == len(runs)
    for run in runs:
        resolve.resolve_config(sweep, run, str(tmp_path / run.name), base)


def test_value_formatting_and_default_names(tmp_path):
    assert [format_value(v) for v in (0.0002, 1e-05, True, [0, 1, 2, 3], "clip, dino", 5, [])] == [
        "0.0002", "1e-05", "true", "0-1-2-3", "clip-dino", "5", "none"]
    sweep = load_sweep(write_sweep(tmp_path, "seeds: [3, 7]\n"))
    assert [r.name for r in sweep.expand()] == ["base__seed3", "base__seed7"]
    assert [r.name for r in load_sweep(write_sweep(tmp_path, "")).expand(default_seed=42)] == ["base__seed42"]


@pytest.mark.parametrize("text, message", [
    ("grid: {SOLVER.BASE_LR: []}\n", "grid.SOLVER.BASE_LR: expected a non-empty list"),
    ("zip: {SOLVER.BASE_LR: [1, 2], SOLVER.MAX_ITER: [1]}\n", "equal lengths"),
    ("grdi: {SOLVER.BASE_LR: [1]}\n", "unknown field 'grdi' (did you mean 'grid'"),
    ("metrics: [miou]\n", "unknown metric 'miou'"),
    ("seeds: [1, 1]\n", "seeds repeat"),
    ("overrides: {SEED: 3}\n", "'seeds' field"),
    ("overrides: {SOLVER.BASE_LR: 1}\ngrid: {SOLVER.BASE_LR: [1, 2]}\n", "SOLVER.BASE_LR is swept and also set"),
    ("runs: {a: {solver.base_lr: 1}}\n", "'solver.base_lr' is not a config key"),
    ("grid: {SOLVER.BASE_LR: [0.1, 0.10]}\n", "the same name"),
])
def test_malformed_sweep_files_fail_naming_the_field(tmp_path, text, message):
    with pytest.raises(SweepError, match=None) as info:
        load_sweep(write_sweep(tmp_path, text)).expand()
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("overrides: {MODEL.COST.ROTATONS: [0, 1]}\n",
     "config key MODEL.COST.ROTATONS does not exist (did you mean 'MODEL.COST.ROTATIONS'"),
    ("grid: {SOLVER.MAX_ITER: [10, abc]}\n", "SOLVER.MAX_ITER: value 'abc' does not fit the key"),
    ("runs: {bad: {MODEL.COST.ROTATION_FUSION: sum}}\n", "MODEL.COST.ROTATION_FUSION must be one of"),
    ("overrides: {DATASETS.TEST: [no_such_set]}\n", "DATASETS.TEST: dataset 'no_such_set' is not registered"),
    ("evaluation: {suite: v9}\n", "evaluation.suite: unknown suite 'v9'"),
    ("evaluation: {suite: synthetic, protocol: P-Z}\n", "evaluation.protocol: unknown protocol 'P-Z'"),
    ("overrides: {MODEL.WEIGHTS: /no/such/model.pth}\n", "MODEL.WEIGHTS: '/no/such/model.pth' does not exist"),
])
def test_invalid_keys_and_values_fail_before_anything_runs(tmp_path, text, message):
    out = tmp_path / "out"
    with pytest.raises(SweepError) as info:
        sweep_cli.main([str(write_sweep(tmp_path, text)), "--output", str(out)])
    assert message in str(info.value)
    assert not out.exists()


# ---------------------------------------------------------------------------- aggregation
def _result(miou: float, miou_u: float = math.nan) -> dict:
    return {"metrics": {"mIoU": miou, "mACC": 2 * miou, "u-mIoU": miou_u},
            "protocol": {"label": "P-B v1", "dataset": "D", "split": ""}}


def test_mean_and_sample_std_over_seeds_against_hand_values():
    assert mean_std([30.0, 32.0, 34.0]) == (32.0, 2.0, 3)
    mean, std, n = mean_std([5.0, math.nan])
    assert (mean, n) == (5.0, 1) and math.isnan(std)
    # two datasets: means over datasets per seed (20, 35), then over seeds
    row = RowResult("a", {"lr": 0.1}, runs=3)
    row.per_seed[0] = run_cells({"x": _result(10.0), "y": _result(30.0)}, ["mIoU", "mACC"])
    row.per_seed[1] = run_cells({"x": _result(20.0), "y": _result(50.0)}, ["mIoU", "mACC"])
    assert row.per_seed[1] == {"x/mIoU": 20.0, "x/mACC": 40.0, "y/mIoU": 50.0, "y/mACC": 100.0,
                               "mean/mIoU": 35.0, "mean/mACC": 70.0}
    other = RowResult("b", {"lr": 0.2}, runs=3, failed=["b__seed1"])
    other.per_seed[0] = run_cells({"x": _result(1.0), "y": _result(2.0)}, ["mIoU", "mACC"])
    markdown = to_markdown([row, other], ["lr"], "T")
    std = math.sqrt(((20 - 27.5) ** 2 + (35 - 27.5) ** 2) / 1)
    assert f"| 27.50 ± {std:.2f} " in markdown  # Mean mIoU of row a
    assert "| 15.00 ± 7.07 " in markdown  # x mIoU of row a: 10, 20
    assert "| 2/3 " in markdown and "| 1/3 " in markdown and "b__seed1" in markdown
    header, first, second = to_csv([row, other], ["lr"]).splitlines()
    assert header.split(",")[:4] == ["run", "lr", "x/mIoU", "x/mIoU_std"]
    assert first.split(",")[2:4] == ["15.0000", "7.0711"]
    assert second.split(",")[2:4] == ["1.0000", ""] and second.endswith(",1,3")


def test_split_metrics_and_training_set_mean():
    cells = run_cells({"train": _result(90.0, 80.0), "other": _result(30.0, 10.0)}, ["mIoU", "u-mIoU"],
                      training_dataset="train")
    assert cells["mean/mIoU"] == 60.0 and cells["mean_without_training_set/mIoU"] == 30.0
    assert cells["mean/u-mIoU"] == 45.0


# ---------------------------------------------------------------------------- resume rules
def test_classify_decides_skip_resume_or_refuse():
    assert classify(None, "i", "e") == NEW
    assert classify({"identity": "other", "status": "finished"}, "i", "e") == CHANGED
    assert classify({"identity": "i", "status": "finished", "evaluation": "e"}, "i", "e") == FINISHED
    assert classify({"identity": "i", "status": "finished", "evaluation": "old"}, "i", "e") == EVALUATE
    assert classify({"identity": "i", "status": "failed", "trained": True}, "i", "e") == EVALUATE
    assert classify({"identity": "i", "status": "running"}, "i", "e") == INTERRUPTED
    assert classify({"identity": "i", "status": "failed"}, "i", "e") == FAILED
    assert classify({"identity": "i", "status": "queued"}, "i", "e") == QUEUED


def test_interrupted_run_restarts_from_scratch_or_resumes_its_checkpoint(tmp_path):
    out = tmp_path / "out"
    sweep = load_sweep(CI_SWEEP)
    plan = sweep_cli.plan_runs(sweep, str(out))[0]
    assert plan.action == NEW
    sweep_cli.prepare(plan, sweep, resume=False)
    run_dir = Path(plan.run_dir)
    assert "BASE_LR: 0.001" in (run_dir / "sweep_config.yaml").read_text()
    (run_dir / "model_0000002.pth").write_bytes(b"checkpoint")
    write_state(plan.run_dir, {**read_state(plan.run_dir), "status": "running"})  # then the sweep was killed

    plan = sweep_cli.plan_runs(sweep, str(out))[0]
    assert plan.action == INTERRUPTED
    sweep_cli.prepare(plan, sweep, resume=True)  # --resume: the folder and its checkpoint are kept
    assert (run_dir / "model_0000002.pth").is_file()
    task = RunTask(plan.run.name, plan.run_dir, plan.datasets, resume=True)
    assert task.command()[-1] == "--resume" and task.command()[2:4] == ["_worker", plan.run_dir]
    sweep_cli.prepare(plan, sweep, resume=False)  # default: a fresh start, nothing of the killed attempt
    assert not (run_dir / "model_0000002.pth").exists() and read_state(plan.run_dir)["status"] == "pending"


# ---------------------------------------------------------------------------- backends
def _fake_python(tmp_path: Path) -> str:
    """A stand-in interpreter for the worker: writes one benchmark result and succeeds, unless the run
    folder's name contains 'broken'."""
    script = tmp_path / "fake_python"
    script.write_text("""#!/bin/sh
run_dir="$3"
case "$run_dir" in *broken*) echo "Traceback: boom" ; exit 3 ;; esac
mkdir -p "$run_dir/benchmark/results"
echo "${CUDA_VISIBLE_DEVICES:-none}" > "$run_dir/gpus.txt"
sleep 0.3  # long enough for every slot to take a run
echo '{"metrics": {"mIoU": 12.5}, "protocol": {"label": "x", "dataset": "d", "split": ""}}' \
  > "$run_dir/benchmark/results/d.json"
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_local_backend_reports_a_failure_and_finishes_the_others(tmp_path):
    python = _fake_python(tmp_path)
    tasks = [RunTask(name, str(tmp_path / name), ("d",), python=python) for name in ("broken", "ok")]
    for task in tasks:
        write_state(task.run_dir, {"name": task.name, "status": "pending"})
    events = []
    outcome = run_local(tasks, str(tmp_path), [None, None], lambda e, t, s: events.append((e, t.name)))
    assert outcome == {"broken": "failed", "ok": "finished"}
    assert read_state(tasks[1].run_dir)["results"] == {"d": {"metrics": {"mIoU": 12.5},
                                                             "protocol": {"label": "x", "dataset": "d", "split": ""}}}
    failed = read_state(tasks[0].run_dir)
    assert failed["status"] == "failed" and "exit status 3" in failed["error"] and "boom" in failed["error"]
    assert sorted(events) == [("failed", "broken"), ("finished", "ok"), ("start", "broken"), ("start", "ok")]


def test_local_backend_gives_each_parallel_run_its_own_gpus_and_skips_locked_runs(tmp_path):
    python = _fake_python(tmp_path)
    tasks = [RunTask(f"r{i}", str(tmp_path / f"r{i}"), ("d",), python=python) for i in range(4)]
    for task in tasks:
        write_state(task.run_dir, {"name": task.name, "status": "pending"})
    held = RunLock(str(tmp_path), "r3")  # another sweep process is running r3
    assert held.acquire()
    outcome = run_local(tasks, str(tmp_path), gpu_slots(["0", "1", "2", "3"], 2, 2), lambda *a: None)
    held.release()
    assert outcome == {"r0": "finished", "r1": "finished", "r2": "finished", "r3": "busy"}
    seen = [(tmp_path / f"r{i}" / "gpus.txt").read_text().strip() for i in range(3)]
    assert set(seen) <= {"0,1", "2,3"} and len(set(seen)) == 2  # two slots, both used, never mixed
    assert not (tmp_path / "r3" / "gpus.txt").exists()


def test_eval_mode_scores_given_weights_without_training(tmp_path):
    with pytest.raises(SweepError, match="mode eval evaluates given weights: set MODEL.WEIGHTS"):
        sweep_cli.main([str(write_sweep(tmp_path, "mode: eval\n")), "--dry-run"])
    plan = {"mode": "eval", "row": "r", "suite": None, "datasets": ["a", "b"], "protocol": "P-B"}
    argv = benchmark_argv(plan, "/runs/r")
    assert argv[argv.index("--datasets") + 1:argv.index("--datasets") + 3] == ["a", "b"]
    assert "MODEL.WEIGHTS" not in argv and argv[argv.index("--protocol") + 1] == "P-B"  # the config's weights
    train = benchmark_argv({**plan, "mode": "train", "suite": "v2"}, "/runs/r")
    assert train[-2:] == ["MODEL.WEIGHTS", "/runs/r/model_final.pth"] and "--datasets" not in train
    parsed = load_script(BENCHMARK_SCRIPT).build_parser().parse_args(benchmark_argv({**plan, "mode": "train"}, "/runs/r"))
    assert parsed.datasets == ["a", "b"] and parsed.opts == ["MODEL.WEIGHTS", "/runs/r/model_final.pth"]


def test_multi_node_rendezvous_from_the_submitit_environment(monkeypatch):
    import submitit

    class Env:
        job_id, node, hostnames = "4321_2", 1, ["gpu-a", "gpu-b"]

    monkeypatch.setattr(submitit, "JobEnvironment", Env)
    assert _submitit_rendezvous() == (1, "tcp://gpu-a:24321")
    task = RunTask("r", "/runs/r", ("d",), num_gpus=8, num_machines=2)
    cmd = task.command(1, "tcp://gpu-a:24321")
    assert cmd[cmd.index("--num-gpus") + 1] == "8" and cmd[cmd.index("--num-machines") + 1] == "2"
    assert cmd[cmd.index("--machine-rank") + 1] == "1"


def test_gpu_subsets_and_slurm_parameters():
    assert gpu_slots(["0", "1", "2", "3", "4"], 2, 8) == [("0", "1"), ("2", "3")]
    assert gpu_slots(["0", "1", "2", "3"], 1, 2) == [("0",), ("1",)]
    assert gpu_slots([], 1, 3) == [None, None, None]
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        gpu_slots(["0"], 4, 1)
    assert [parse_minutes(t) for t in (90, "90", "1:30:00", "2-00:00:00", "0:00:30")] == [90, 90, 90, 2880, 1]
    with pytest.raises(ValueError):
        parse_minutes("soon")
    params = slurm_parameters({"partition": "gpu", "time": "12:00:00", "nodes": 2, "gpus_per_node": 8,
                               "additional": {"exclusive": True}}, "s/r")
    assert params == {"name": "s/r", "timeout_min": 720, "nodes": 2, "gpus_per_node": 8, "tasks_per_node": 1,
                      "cpus_per_task": 10, "slurm_partition": "gpu", "slurm_additional_parameters": {"exclusive": True}}


def test_slurm_backend_writes_the_job_parameters_into_sbatch(tmp_path, monkeypatch, capsys):
    """No cluster: fake ``srun``/``sbatch`` on PATH; the sbatch file submitit generates is checked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    submit = f'cp "$1" {tmp_path}/submitted.sh; echo "Submitted batch job 4242"'
    for name, body in (("srun", "exit 0"), ("sbatch", submit)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    code = sweep_cli.main([str(CI_SWEEP), "--output", str(out), "--backend", "slurm", "--only", "lr=0.001*",
                           "--partition", "gpu", "--time", "2:00:00", "--nodes", "2", "--gpus-per-node", "4",
                           "--cpus-per-task", "16", "--account", "lab"])
    assert code == 0
    sbatch = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=16", "#SBATCH --account=lab",
                 "#SBATCH --job-name=synthetic-ci/lr=0.001__seed0"):
        assert line in sbatch, line
    state = read_state(str(out / "lr=0.001__seed0"))
    assert state["status"] == "queued" and state["job_id"] == "4242"
    assert (out / "lr=0.001__seed0" / "sweep_config.yaml").is_file()
    assert "submitted lr=0.001__seed0: job 4242" in capsys.readouterr().out
    # submitted from a machine without GPUs, a run for GPU nodes is configured for CUDA (base sets no device)
    out = tmp_path / "out2"
    assert sweep_cli.main([str(write_sweep(tmp_path, "")), "--output", str(out), "--backend", "slurm",
                           "--gpus-per-node", "2", "--time", "60"]) == 0
    assert "  DEVICE: cuda\n" in (out / "base__seed42" / "sweep_config.yaml").read_text()
    assert "#SBATCH --gpus-per-node=2" in (tmp_path / "submitted.sh").read_text()


# ---------------------------------------------------------------------------- end to end
def test_synthetic_sweep_end_to_end_debug_slurm_then_local_then_skip(tmp_path, capsys):
    """The CI sweep: one run through submitit's debug executor, the other locally (the finished one
    is skipped); the table has both; a rerun runs nothing; another config is refused."""
    out = tmp_path / "out"
    args = [str(CI_SWEEP), "--output", str(out)]
    assert sweep_cli.main([*args, "--backend", "slurm", "--submitit-cluster", "debug", "--wait",
                           "--only", "lr=0.001*"]) == 0
    assert read_state(str(out / "lr=0.001__seed0"))["status"] == "finished"
    final = out / "lr=0.001__seed0" / "model_final.pth"
    kept = final.stat().st_mtime_ns
    assert sweep_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "skip (finished)" in printed and final.stat().st_mtime_ns == kept
    table = (out / "results.md").read_text()
    assert "| lr=0.001  | 0.001  |" in table and "| lr=0.0003 | 0.0003 |" in table and table.count("| 1/1 ") == 2
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "run,lr,synthetic_rs_val/mIoU,synthetic_rs_val/mIoU_std,synthetic_rs_val/h-mIoU," \
                      "synthetic_rs_val/h-mIoU_std,seeds,planned"
    assert (out / "plot_lr.png").stat().st_size > 0
    for run in ("lr=0.001__seed0", "lr=0.0003__seed0"):
        state = read_state(str(out / run))
        assert state["status"] == "finished" and set(state["results"]) == {"synthetic_rs_val"}
        assert "BASE_LR: " in (out / run / "sweep_config.yaml").read_text()

    assert sweep_cli.main(args) == 0  # nothing left to run
    assert "0 to run" in capsys.readouterr().out

    # an interrupted run is restarted (dry run shows it); a run folder of another config is refused
    state = read_state(str(out / "lr=0.0003__seed0"))
    write_state(str(out / "lr=0.0003__seed0"), {**state, "status": "running", "trained": False})
    assert sweep_cli.main([*args, "--dry-run"]) == 0
    assert "restart (interrupted)" in capsys.readouterr().out
    write_state(str(out / "lr=0.0003__seed0"), {**state, "identity": "train:something-else"})
    with pytest.raises(SweepError, match="different config"):
        sweep_cli.main(args)
    json.loads((out / "lr=0.0003__seed0" / "sweep_run.json").read_text())  # untouched, still valid
