"""The README's quick-check commands work verbatim in the environment the two set-up commands create."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """Command lines of every ```bash block preceded by ``<!-- readme-test -->``."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- readme-test -->\s*```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_has_tested_commands():
    commands = readme_commands()
    assert len(commands) >= 3 and all(c.startswith("python ") for c in commands)


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
