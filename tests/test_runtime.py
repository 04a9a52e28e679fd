"""CPU process defaults and adaptive threads (ovrsis/runtime.py): set before torch loads, in every
entry point; the thread governor; the contention benchmark."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from ovrsis import runtime
from ovrsis.runtime import (
    FIXED_THREADS_DEFAULTS,
    ThreadGovernor,
    adapt_threads,
    adaptive_threads_enabled,
    apply_cpu_defaults,
    busy_core_seconds,
    cpu_quota,
    threads_for_free_cores,
)

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = sorted(str(p.relative_to(REPO)) for p in [REPO / "train_net.py", *(REPO / "tools").glob("*.py"),
                                                       *(REPO / "eval_scripts").glob("*.py")])
LOADS_OPENMP = ("torch", "torchvision", "detectron2", "open_clip", "fvcore", "timm")
SETS_DEFAULTS = ("ovrsis", "_common")  # _common imports ovrsis first


def test_fixed_threads_wait_passively_and_adaptive_threads_keep_the_short_spin():
    adaptive = os.path.exists("/proc/stat")  # Linux: adaptive threads by default
    env = {}
    assert apply_cpu_defaults(env) == ({} if adaptive else FIXED_THREADS_DEFAULTS)
    env = {"OVRSIS_ADAPTIVE_THREADS": "0"}
    assert apply_cpu_defaults(env) == FIXED_THREADS_DEFAULTS and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OVRSIS_ADAPTIVE_THREADS": "0", "OMP_WAIT_POLICY": "ACTIVE"}  # the user's own value wins
    assert apply_cpu_defaults(env) == {} and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"OVRSIS_CPU_DEFAULTS": "0"}  # the libraries' defaults: neither
    assert apply_cpu_defaults(env) == {} and "OMP_WAIT_POLICY" not in env and not adaptive_threads_enabled(env)


@pytest.mark.parametrize("adaptive, expected", [("1", "None"), ("0", "PASSIVE")])
def test_importing_ovrsis_sets_the_environment_before_torch_loads(adaptive, expected):
    code = ("import os, sys; import ovrsis; assert 'torch' not in sys.modules; "
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OVRSIS_ADAPTIVE_THREADS": adaptive}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def _first_import(tree: ast.Module, prefixes) -> float:
    """Line of the first top-level import of a module starting with one of ``prefixes`` (inf if none)."""
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n == p or n.startswith(p + ".") for n in names for p in prefixes):
            return node.lineno
    return float("inf")


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_imports_ovrsis_before_torch(path):
    tree = ast.parse((REPO / path).read_text())
    first_torch = _first_import(tree, LOADS_OPENMP)
    if first_torch == float("inf"):
        return  # imports torch only through ovrsis modules (or not at all)
    assert _first_import(tree, SETS_DEFAULTS) < first_torch, (
        f"{path}: import ovrsis before torch/detectron2 so OpenMP starts with ovrsis' CPU defaults")


# ------------------------------------------------------------------ adaptive intra-op threads
@pytest.mark.parametrize("free, ceiling, expected", [
    (2.0, 2, 2), (1.9, 2, 2), (1.5, 2, 2),  # quiet, or a light neighbour: every thread gets a core
    (1.33, 2, 1), (1.0, 2, 1), (0.4, 2, 1), (0.0, 2, 1),  # 1, 2, 4 busy neighbours: one thread
    (3.7, 4, 4), (2.6, 4, 3), (7.9, 4, 4),  # never above the ceiling
])
def test_threads_follow_the_free_cores(free, ceiling, expected):
    assert threads_for_free_cores(free, ceiling) == expected


def test_busy_core_seconds_reads_only_this_process_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 100 5000 0 0 0 0 0 0\n"
                    "cpu0 100 10 20 1000 50 1 2 3 0 0\n"  # busy 136 ticks (idle 1000 and iowait 50 left out)
                    "cpu1 400 0 60 2000 0 0 0 0 0 0\n"  # busy 460
                    "cpu2 999 0 0 0 0 0 0 0 0 0\n"
                    "intr 12345\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert busy_core_seconds([0, 1], str(stat)) == pytest.approx((136 + 460) / hz)
    assert busy_core_seconds([1], str(stat)) == pytest.approx(460 / hz)
    assert busy_core_seconds([7], str(stat)) is None  # a CPU the file does not list
    assert busy_core_seconds([0], str(tmp_path / "absent")) is None  # not Linux


class FakeMachine:
    """A 2-core machine on which ``others`` cores' worth of other processes run and this
    process uses ``own`` cores, advanced by hand."""

    def __init__(self, threads: int = 2):
        self.now = 0.0
        self.busy = 0.0
        self.own = 0.0
        self.threads = threads
        self.calls = []

    def advance(self, seconds: float, others: float, own: float = 1.0):
        self.now += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds

    def set_threads(self, n: int):
        self.calls.append(n)
        self.threads = n

    def governor(self, **kw) -> ThreadGovernor:
        return ThreadGovernor([0, 1], read_busy=lambda: self.busy, read_own=lambda: self.own, clock=lambda: self.now,
                              get_threads=lambda: self.threads, set_threads=self.set_threads, **kw)


def test_governor_gives_way_to_busy_processes_and_takes_the_cores_back():
    machine = FakeMachine()
    gov = machine.governor()
    assert gov.update() == 2 and machine.calls == []  # first sample: nothing to compare yet
    machine.advance(1.0, others=0.05, own=1.9)
    assert gov.update() == 2 and machine.calls == []  # quiet: both threads
    machine.advance(1.0, others=0.67, own=1.33)  # one busy neighbour takes its third of 2 cores
    assert gov.update() == 1 and machine.calls == [1]
    machine.advance(1.0, others=1.0, own=1.0)  # steady state next to it: stays at one thread
    assert gov.update() == 1 and machine.calls == [1]
    machine.advance(1.0, others=0.0, own=1.0)  # the neighbour stopped
    assert gov.update() == 2 and machine.calls == [1, 2]


def test_a_sample_taken_at_import_lets_the_first_network_call_decide():
    machine = FakeMachine()
    first = (machine.now, machine.busy, machine.own)  # as runtime.IMPORT_SAMPLE
    machine.advance(3.0, others=1.0, own=1.0)  # building the model next to a busy process
    assert machine.governor(first_sample=first).update() == 1 and machine.calls == [1]
    assert runtime.IMPORT_CPUS == runtime.available_cpus()


def test_governor_samples_at_most_every_interval():
    machine = FakeMachine()
    gov = machine.governor(interval=0.5)
    gov.update()
    machine.advance(0.2, others=2.0, own=0.0)
    assert gov.update() == 2 and machine.calls == []  # too soon: no new sample
    machine.advance(0.4, others=2.0, own=0.0)
    assert gov.update() == 1  # the whole 0.6 s since the first sample counts


def test_governor_keeps_a_count_set_by_someone_else_as_its_ceiling():
    machine = FakeMachine(threads=4)
    gov = machine.governor()
    gov.update()
    machine.threads = 1  # e.g. torch.set_num_threads(1) by the caller
    machine.advance(1.0, others=0.0)
    assert gov.update() == 1 and machine.calls == [] and gov.max_threads == 1  # never raised above it


def test_governor_without_readings_changes_nothing():
    machine = FakeMachine()
    gov = ThreadGovernor([0, 1], read_busy=lambda: None, clock=lambda: machine.now,
                         get_threads=lambda: machine.threads, set_threads=machine.set_threads)
    for _ in range(3):
        machine.now += 1.0
        assert gov.update() == 2
    assert machine.calls == []


def test_cpu_quota_of_cgroup_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")  # docker --cpus 2.5
    assert cpu_quota(str(v2)) == 2.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(str(tmp_path / "v1")) == 2.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(str(tmp_path / "v1")) is None
    assert cpu_quota(str(tmp_path / "absent")) is None


def test_governor_keeps_a_container_within_its_cpu_quota():
    """PyTorch starts one thread per host core; in a 2.5-CPU container on a 16-core host the
    governor brings that down to the quota's whole cores, and lower when the host is busy."""
    machine = FakeMachine(threads=16)
    gov = ThreadGovernor(list(range(16)), quota=2.5, read_busy=lambda: machine.busy, read_own=lambda: machine.own,
                         clock=lambda: machine.now, get_threads=lambda: machine.threads,
                         set_threads=machine.set_threads)
    gov.update()
    machine.advance(1.0, others=3.0, own=2.5)  # host has 13 free cores: the quota decides
    assert gov.update() == 2 and machine.calls == [2]
    machine.advance(1.0, others=15.0, own=1.0)  # a busy host leaves one core
    assert gov.update() == 1


def test_adaptive_threads_opt_outs():
    assert adaptive_threads_enabled({}) == os.path.exists("/proc/stat")
    assert not adaptive_threads_enabled({"OVRSIS_ADAPTIVE_THREADS": "0"})
    assert not adaptive_threads_enabled({"OVRSIS_CPU_DEFAULTS": "0"})


class CountingGovernor:
    def __init__(self):
        self.updates = 0

    def update(self):
        self.updates += 1


@pytest.fixture
def counting_governor(monkeypatch):
    governor = CountingGovernor()
    monkeypatch.setattr(runtime, "_GOVERNOR", governor)
    monkeypatch.setattr(runtime, "_GOVERNOR_OFF", False)
    monkeypatch.setattr(runtime, "_GOVERNED_THREAD", threading.get_ident())
    return governor


def test_every_network_region_of_every_meta_architecture_adapts_the_threads(counting_governor):
    """Training steps, whole-image / tiled / slide inference of the CAT-Seg family and the
    training-free windows all reach :func:`adapt_threads` (on the CPU, once per network call)."""
    from detectron2.modeling import build_model

    from ovrsis.engine import setup_cfg

    model = build_model(setup_cfg(str(REPO / "configs" / "quickstart.yaml"), ["MODEL.DEVICE", "cpu"]))
    model.set_vocabulary(["water", "road"])
    model.set_vocabulary(["water", "road"], train=True)
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    model.train()
    model([{"image": image, "sem_seg": torch.zeros(64, 64, dtype=torch.long)}])
    assert counting_governor.updates == 1
    model.eval()
    for mode in ("whole", "slide", "tiled"):
        before = counting_governor.updates
        model.inference_mode = mode
        with torch.no_grad():
            model([{"image": image, "height": 64, "width": 64}])
        assert counting_governor.updates > before, mode
    segmentor = build_model(setup_cfg(str(REPO / "configs" / "segearth_ov" / "base.yaml"),
                                      ["MODEL.DEVICE", "cpu", "MODEL.CLIP.ARCH", "ovrsis-tiny-vit",
                                       "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.IMAGE_SIZE", 64,
                                       "MODEL.TRAINING_FREE.SIMFEATUP_WEIGHTS", "", "TEST.TILED.TILE", 32,
                                       "TEST.TILED.STRIDE", 16, "TEST.TILED.LONG_SIDE", 64]))
    segmentor.set_vocabulary(["water", "road"])
    before = counting_governor.updates
    with torch.no_grad():
        segmentor([{"image": image.float(), "height": 64, "width": 64}])
    assert counting_governor.updates > before


def test_adapt_threads_ignores_other_devices_and_other_threads(counting_governor):
    adapt_threads(torch.device("cuda"))
    adapt_threads("meta")
    assert counting_governor.updates == 0
    adapt_threads(torch.device("cpu"))
    assert counting_governor.updates == 1
    worker = threading.Thread(target=adapt_threads, args=("cpu",))  # e.g. a web server's request thread
    worker.start()
    worker.join()
    assert counting_governor.updates == 1


BUSY_NEIGHBOURS = """
import os, subprocess, sys, time
import ovrsis, torch
from ovrsis import runtime
os.sched_setaffinity(0, {0, 1})
loop = "import os\\nos.sched_setaffinity(0, {0, 1})\\nwhile True: pass\\n"
def work(seconds):
    x = torch.randn(256, 256)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        runtime.adapt_threads("cpu")
        x @ x
work(1.2)
quiet = torch.get_num_threads()
busy = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(2)]
work(2.5)
crowded = torch.get_num_threads()
for p in busy: p.kill()
for p in busy: p.wait()
work(2.5)
print(quiet, crowded, torch.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or not os.path.exists("/proc/stat"), reason="needs Linux and 2 cores")
def test_real_busy_neighbours_take_a_thread_and_give_it_back():
    """On this machine's first two cores: two busy processes → one intra-op thread; after they
    stop → two again (the real /proc/stat, not a fake)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", BUSY_NEIGHBOURS], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["2", "1", "2"], out.stderr[-2000:]


def test_contention_benchmark_rows(tmp_path):
    """tools/contention_benchmark.py end to end at its smallest: N = 0 and 1 half-busy neighbour,
    one setting, one round; the fair share and ratios follow from the measured times."""
    from tool_modules import import_tools

    bench = import_tools("contention_benchmark")["contention_benchmark"]
    rows = bench.main(["--busy", "0", "1", "--duty", "0.5", "--rounds", "1", "--steps", "1", "--infer-iters", "1",
                       "--setting", "after:", "--json", str(tmp_path / "rows.json")])
    assert [(r["setting"], r["busy"]) for r in rows] == [("after", 0), ("after", 1)]
    for r in rows:
        cores, threads = r["cores"], r["threads"]
        assert r["fair_share"] == pytest.approx(max(1.0, max(r["busy"] * 0.5 + threads, r["load"]) / cores))
        for k in ("train", "infer"):
            assert r[f"{k}_ms"] > 0 and r[f"{k}_ratio"] == pytest.approx(r[f"{k}_slowdown"] / r["fair_share"])
        assert 1 <= r["threads_at_end"] <= threads
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
