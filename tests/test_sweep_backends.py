"""Every sweep backend checks its prerequisites before the runs are validated (minutes in a large
sweep): a sweep that cannot run stops at once, with a one-line reason, and leaves no run folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import ovrsis  # noqa: F401  (compat shims before detectron2)
from ovrsis.sweep.spec import SweepError

REPO = Path(__file__).resolve().parents[1]
SWEEP = str(REPO / "configs" / "sweeps" / "synthetic.yaml")


@pytest.fixture()
def sweep_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("sweep_backends_test", REPO / "eval_scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def no_validation(*args, **kwargs):
        raise AssertionError("the runs were validated before the backend was checked")

    monkeypatch.setattr(module, "plan_runs", no_validation)
    return module


@pytest.mark.parametrize("backend_args, message", [
    (["--backend", "slurm"], r"--backend slurm: no Slurm here \(sbatch and srun not found on PATH\)"),
    (["--backend", "slurm", "--partition", "gpu", "--gpus-per-node", "4"], "no Slurm here"),
    (["--backend", "local", "--gpus", "0", "--gpus-per-run", "2"], r"--gpus-per-run 2: a run needs 2 GPUs but only 1"),
])
def test_backend_prerequisites_fail_before_validation(sweep_script, backend_args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch / srun on this PATH
    output = tmp_path / "sweep"
    with pytest.raises(SweepError, match=message):
        sweep_script.main([SWEEP, "--output", str(output), *backend_args])
    assert not output.exists()  # no run folder made, none left "pending" or "interrupted"


def test_slurm_test_executors_need_no_slurm(sweep_script, tmp_path, monkeypatch):
    """submitit's local/debug executors (used to test the Slurm path) pass the check and reach validation."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AssertionError, match="validated"):
        sweep_script.main([SWEEP, "--output", str(tmp_path / "s"), "--backend", "slurm", "--submitit-cluster", "debug"])


def test_a_sweep_user_error_is_one_ovrsis_error_line(sweep_script, tmp_path, monkeypatch, capsys):
    """The sweep script reports like every entry point: ``ovrsis: error: ...``, exit status 2."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr("sys.argv", ["sweep.py", SWEEP, "--output", str(tmp_path / "s"), "--backend", "slurm"])
    with pytest.raises(SystemExit) as exit_:
        sweep_script.run()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ovrsis: error: --backend slurm: no Slurm here"), err
