"""Shared test fixtures."""
import ovrsis  # noqa: F401  (before torch: CPU process defaults, ovrsis/runtime.py)
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    spin-waiting makes them several times slower; restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
