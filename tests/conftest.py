"""Shared test set-up: fresh Pyro state, validation on and a fixed seed before every test."""

import os

import pyro
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# the suite tests CPU semantics ("auto" would pick a GPU where there is one); GPU paths have
# their own tests that ask for device="cuda"
os.environ.setdefault("HYPERBAYES_DEVICE", "cpu")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST: loaded from the cache, fetched once if missing; skips when it can't be had."""
    import hyperbayes as hb

    try:
        return hb.datasets.load("mnist")
    except hb.datasets.DatasetError:
        pass
    try:
        hb.datasets.fetch("mnist", progress=False)
        return hb.datasets.load("mnist")
    except (hb.datasets.DatasetError, OSError) as err:
        pytest.skip(f"MNIST is not available and could not be fetched: {err}")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny nets gain nothing from a second one, and on a busy
    2-core machine two threads spin-wait (a 150-step Bayes by Hypernet fit took 46 s with 2
    threads and 6 s with 1). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def images():
    """MNIST from the cache when it is there, else the small ``digits`` set (8×8 images)."""
    import hyperbayes as hb

    try:
        return hb.datasets.load("mnist")
    except hb.datasets.DatasetError:
        return hb.datasets.load("digits")
