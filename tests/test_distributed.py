"""Data-parallel SVI: two gloo processes take the same steps as one process on the whole
minibatches, and a checkpoint written by two resumes in one."""

from pathlib import Path

import pyro
import pytest
import torch

import hyperbayes as hb
from hyperbayes.inference import distributed as dp
from hyperbayes.models import Gaussian, noise, priors

#: the methods the data-parallel test trains: a mean field with local reparameterization
#: (per-example noise), the scales flow and the MetaPrior (global codes)
METHODS = {"meanfield": {"local_reparameterization": True}, "flow": {}, "metaprior": {}}
SIZES, N, BATCH = [2, 8, 1], 44, 16  # 44 = 2 × 16 + 12: a short last minibatch each epoch


def _data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(N, 2, generator=generator)
    y = x.sum(1, keepdim=True) ** 2 / 4 + 0.1 * torch.randn(N, 1, generator=generator)
    return x, y


def _train(name: str, steps: int, checkpoint=None):
    """Build ``name`` (seed 0) and fit it for ``steps`` on the toy data; its state."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide, loss, _ = hb.methods.setup(name, "regression", SIZES, priors.Normal(1.0),
                                             Gaussian(0.1), **METHODS[name])
    result = hb.inference.fit(model, guide, _data(), steps=steps, batch_size=BATCH, lr=1e-2,
                              loss=loss, seed=0, progress=False, warn=False, device="cpu",
                              checkpoint=checkpoint)
    return {"model": model.state_dict(), "guide": guide.state_dict(),
            "losses": torch.tensor(result.losses)}


def _worker(out: str, steps: int) -> None:
    """One rank: train every method (rank 0 saves the states and a checkpoint of each)."""
    states = {name: _train(name, steps, Path(out) / f"{name}.ckpt") for name in METHODS}
    assert dp.world_size() == 2
    if dp.is_main():
        torch.save(states, Path(out) / "states.pt")


def _assert_same(a: dict, b: dict, what: str) -> None:
    for part in ("model", "guide"):
        assert a[part].keys() == b[part].keys()
        for key, value in a[part].items():
            if torch.is_tensor(value) and value.is_floating_point():
                torch.testing.assert_close(value, b[part][key], rtol=1e-4, atol=1e-5,
                                           msg=f"{what}: {part} {key}")
    torch.testing.assert_close(a["losses"], b["losses"], rtol=1e-4, atol=1e-4)


def test_two_processes_take_the_steps_of_one_and_resume_in_one(tmp_path):
    dp.launch_local(_worker, 2, str(tmp_path), 4)
    parallel = torch.load(tmp_path / "states.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in METHODS:
            _assert_same(parallel[name], _train(name, 4), name)
            # the 2-process checkpoint at step 4 continues in one process to step 8 as an
            # uninterrupted one-process run does
            resumed = _train(name, 8, tmp_path / f"{name}.ckpt")
            _assert_same(resumed, _train(name, 8), f"{name} resumed")
    finally:
        torch.set_num_threads(threads)


def _resume_worker(out: str) -> None:
    """Rank 0 resumes the one-process checkpoint; rank 1's own path has none (an experiment's
    other ranks write into a temporary folder): both continue from rank 0's."""
    path = Path(out) / "meanfield.ckpt" if dp.is_main() else Path(out) / "elsewhere" / "m.ckpt"
    state = _train("meanfield", 8, path)
    torch.save(state, Path(out) / f"rank{dp.rank()}.pt")


def test_a_rerun_under_two_processes_resumes_rank_0s_checkpoint_on_every_rank(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train("meanfield", 4, tmp_path / "meanfield.ckpt")  # interrupted at step 4
        dp.launch_local(_resume_worker, 2, str(tmp_path))
        ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
        straight = _train("meanfield", 8)
    finally:
        torch.set_num_threads(threads)
    _assert_same(ranks[0], ranks[1], "rank 1 against rank 0")
    # steps 5-8 on two processes are the steps one process takes
    _assert_same(ranks[0], straight, "resumed on two processes")
    assert not (tmp_path / "elsewhere").exists()  # rank 1 read and wrote nothing of its own


def test_data_parallelism_warns_of_layers_that_act_per_shard():
    from torch import nn

    from hyperbayes.inference import svi

    body = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.2), nn.BatchNorm1d(8), nn.Linear(8, 1))
    model = hb.models.BNN(body, priors.Normal(1.0), Gaussian(0.1))
    with pytest.warns(UserWarning, match="BatchNorm1d, Dropout in the module"):
        svi._check_data_parallel(model, N, BATCH, 2)
    plain = hb.models.BNN(hb.models.MLP(SIZES), priors.Normal(1.0), Gaussian(0.1))
    svi._check_data_parallel(plain, N, BATCH, 2)  # nothing to say (warnings are errors here)


def test_a_resumed_gpu_generator_is_the_savers_own_device_state():
    from hyperbayes.inference import svi

    states = [torch.full((4,), float(i)).to(torch.uint8) for i in range(3)]
    # older checkpoints kept every visible device's state: the resuming device's index
    assert torch.equal(svi._cuda_rng_of(states, torch.device("cuda", 2)), states[2])
    assert torch.equal(svi._cuda_rng_of(states[:1], torch.device("cuda", 2)), states[0])
    # now one state, the saving process's device's, which every rank sets on its own device
    assert torch.equal(svi._cuda_rng_of(states[1], torch.device("cuda", 0)), states[1])


def test_per_example_noise_is_the_same_in_shards():
    like = torch.empty(3, 10, 4)
    torch.manual_seed(0)
    whole = noise.normal_noise(like), noise.dropout_mask(like, 0.5)
    torch.manual_seed(0)
    with noise.shard(10, 4, 7):
        part = noise.normal_noise(like[:, 4:7]), noise.dropout_mask(like[:, 4:7], 0.5)
    for full, piece in zip(whole, part, strict=True):
        torch.testing.assert_close(full[:, 4:7], piece)
    with pytest.raises(RuntimeError, match="rows in a shard"), noise.shard(10, 4, 7):
        noise.normal_noise(like)


def test_shards_cover_the_minibatch_and_bad_splits_are_refused():
    bounds = [dp.shard_bounds(11, r, 3) for r in range(3)]
    assert bounds == [(0, 3), (3, 7), (7, 11)]
    model, guide, loss, _ = hb.methods.setup("map", "regression", SIZES, priors.Normal(1.0),
                                             Gaussian(0.1))
    with pytest.raises(ValueError, match="distributed must be"):
        hb.inference.fit(model, guide, _data(), steps=1, distributed="yes")
    from hyperbayes.inference.svi import _check_data_parallel

    with pytest.raises(ValueError, match="smaller than the 4 processes"):
        _check_data_parallel(model, N, 3, 4)
    with pytest.raises(ValueError, match="last minibatch of each epoch has 1 examples"):
        _check_data_parallel(model, 41, 8, 2)


def test_under_torchrun_only_rank_0_writes_an_experiments_results(tmp_path, monkeypatch):
    from hyperbayes.experiments.common import experiment

    @experiment
    def run(*, out="unused", device="cpu"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text("{}")
        return Path(out)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    elsewhere = run(out=tmp_path / "results")
    assert not (tmp_path / "results").exists() and not elsewhere.exists()  # a removed temp dir
    with dp.independent():  # a suite job writes its own results on any rank
        assert run(out=tmp_path / "job") == tmp_path / "job"
    monkeypatch.setenv("RANK", "0")
    assert run(out=tmp_path / "results") == tmp_path / "results"
    assert (tmp_path / "results" / "metrics.json").exists()
