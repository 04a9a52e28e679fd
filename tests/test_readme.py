"""The README's quick-check commands work verbatim in the environment the two set-up commands create;
so do the commands of docs/extending.md and of the projects/ example (each in a scratch copy of the
repository: a folder of links to its entries, so their outputs stay out of the repository)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TESTED_DOCS = {"README.md": 3, "docs/extending.md": 1, "projects/cost_gate/README.md": 3}  # doc: commands at least


def readme_commands(doc: str = "README.md") -> list[str]:
    """Command lines of every ```bash block preceded by ``<!-- readme-test -->`` in ``doc``."""
    text = (REPO / doc).read_text()
    blocks = re.findall(r"<!-- readme-test -->\s*```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("doc", sorted(TESTED_DOCS))
def test_docs_have_tested_commands(doc):
    commands = readme_commands(doc)
    assert len(commands) >= TESTED_DOCS[doc] and all(c.startswith("python ") for c in commands)


def run_verbatim(doc: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """Run ``doc``'s tested commands in order in a scratch copy of the repository (links to every
    top-level entry but ``output``); returns the copy and each command's output."""
    work = tmp_path / "repo"
    work.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("output", ".git"):
            (work / entry.name).symlink_to(entry)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OVRSIS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    outputs = []
    for command in readme_commands(doc):
        proc = subprocess.run(shlex.split(command), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"{doc}: {command}\n{outputs[-1][-3000:]}"
    return work, outputs


def test_extending_guide_commands_run_verbatim(tmp_path):
    work, outputs = run_verbatim("docs/extending.md", tmp_path)
    assert "aggregator.cost_embed       CostGateFusion" in outputs[0]  # tools/model_stats.py built the project's part


def test_project_example_runs_verbatim_reproduces_from_its_run_folder_and_writes_its_table(tmp_path):
    """projects/cost_gate/README.md: 2 CPU ranks train with the project's fusion (a rank without it
    could not join DDP: parameters differ), the run folder's config.yaml rebuilds and scores the same
    model, and the sweep over the switch writes its table."""
    work, outputs = run_verbatim("projects/cost_gate/README.md", tmp_path)
    run, again = work / "output" / "cost_gate", work / "output" / "cost_gate_eval"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["IMPORTS"] == [str(REPO / "projects" / "cost_gate" / "cost_gate")]
    assert saved["MODEL"]["COST"]["FUSION"] == "cost_gate" and saved["MODEL"]["COST_GATE"]["HIDDEN"] == 16
    weights = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert "aggregator.cost_embed.gate.0.weight" in weights
    metrics = [json.loads((d / "inference" / "synthetic_rs_val" / "sem_seg_metrics.json").read_text())
               for d in (run, again)]
    trained, reloaded = (m.get("metrics", m)["mIoU"] for m in metrics)
    assert reloaded == pytest.approx(trained, abs=1e-6)
    table = (work / "output" / "sweeps" / "cost-gate" / "results.md").read_text()
    assert "| fusion=conv " in table and "| fusion=cost_gate " in table and table.count("| 1/1 ") == 2
    assert "aggregator.cost_embed.gate.0.weight" in torch.load(
        work / "output" / "sweeps" / "cost-gate" / "fusion=cost_gate__seed0" / "model_final.pth",
        map_location="cpu", weights_only=False)["model"]


def test_readme_commands_run_verbatim(tmp_path):
    """Each command in order (the eval-only line reads the checkpoint the first one writes),
    with ``python`` resolving to this interpreter as after ``source .venv/bin/activate``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OVRSIS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    for command in readme_commands():
        proc = subprocess.run(shlex.split(command), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command}\n{output[-3000:]}"
        if "--eval-only" in command:
            assert "h-mIoU" in output
            out_dir = command.split("OUTPUT_DIR")[-1].split()[0]
            for line in output.splitlines():  # the summary names only files that exist
                match = re.match(r"\s+[\w ]+: (/\S+)$", line)
                if match and out_dir in match.group(1):
                    assert Path(match.group(1)).exists(), line
