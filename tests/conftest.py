"""Shared test set-up: fresh Pyro state, validation on and a fixed seed before every test."""

import os

import pyro
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# the suite tests CPU semantics ("auto" would pick a GPU where there is one); GPU paths have
# their own tests that ask for device="cuda"
os.environ.setdefault("HYPERBAYES_DEVICE", "cpu")
# Under pytest-xdist (`make test` runs two workers on CI's two cores) each worker gets one thread:
# two threads per worker would oversubscribe the cores and spin-wait.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else
                      max(1, min(2, torch.get_num_threads())))

#: test files that share the session's smoke suite run (the suite_run fixture): one xdist group,
#: so that it is built once
_SUITE_FILES = {"test_fidelity", "test_registry", "test_suite"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """One xdist group per test file (module fixtures are built once; the docs site, built in
    the source tree, by one worker only), the suite's users in one group."""
    for item in items:
        stem = item.path.stem
        item.add_marker(pytest.mark.xdist_group("suite" if stem in _SUITE_FILES else stem))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


def load_or_fetch(name: str):
    """A built-in dataset from the cache, fetched once if missing; skips the test when it can't
    be had (no network)."""
    import hyperbayes as hb

    try:
        return hb.datasets.load(name)
    except hb.datasets.DatasetError:
        pass
    try:
        hb.datasets.fetch(name, progress=False)
        return hb.datasets.load(name)
    except (hb.datasets.DatasetError, OSError) as err:
        pytest.skip(f"{name} is not available and could not be fetched: {err}")


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST: loaded from the cache, fetched once if missing; skips when it can't be had."""
    return load_or_fetch("mnist")


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


@pytest.fixture(scope="session")
def suite_run(tmp_path_factory):
    """``hyperbayes suite`` over every task and every registered method at smoke sizes on real
    MNIST (fidelity on the cubic and product toys), run once for the session: the suite's tests
    and the task tests that need every method read its output folders."""
    from dataclasses import replace

    from hyperbayes.experiments import (
        active_learning,
        adversarial,
        calibration,
        fidelity,
        ood,
        suite,
        unseen_class,
    )

    load_or_fetch("mnist")
    load_or_fetch("fashion_mnist")  # ood's first set
    smoke = {
        "calibration": calibration.Settings.smoke(),
        "ood": ood.Settings.smoke(),
        "unseen-class": unseen_class.Settings.smoke(),
        "adversarial": adversarial.Settings.smoke(),
        "active-learning": active_learning.Settings.smoke(),
        "fidelity": replace(fidelity.Settings.smoke(), toys=("cubic", "product")),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("suite")
        yield suite.run(suite.TASKS, device="cpu", out=out, progress=False, settings=smoke)
    finally:
        torch.set_num_threads(threads)
