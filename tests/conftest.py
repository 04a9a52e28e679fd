"""Shared test fixtures."""
import os

# Tests compare results bit for bit, and a thread count that follows the machine's load changes
# the order of float reductions: the suite (and every process it starts) keeps a fixed count,
# with the passive OpenMP waiting that goes with it (ovrsis/runtime.py). The governor is tested
# on its own (tests/test_runtime.py).
os.environ.setdefault("OVRSIS_ADAPTIVE_THREADS", "0")

import ovrsis  # noqa: E402,F401  (before torch: CPU process defaults, ovrsis/runtime.py)
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    spin-waiting makes them several times slower; restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quickstart_checkpoint(tmp_path_factory, one_thread):
    """``quickstart_checkpoint(seed)``: path of a saved quickstart model whose random weights are
    perturbed by seeded noise (scores far from uniform, so predictions are not ties)."""
    from pathlib import Path

    from detectron2.modeling import build_model

    from ovrsis.engine import setup_cfg

    config = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")

    def make(seed: int) -> str:
        model = build_model(setup_cfg(config, ["MODEL.DEVICE", "cpu"]))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        path = str(tmp_path_factory.mktemp("ckpt") / "model_final.pth")
        torch.save({"model": model.state_dict()}, path)
        return path

    return make
