"""Tests for hyperbayes.inference: the fit loop, checkpoints and resume, devices and prediction."""

import math
import os
from types import SimpleNamespace

import pytest
import torch
from pyro.infer.autoguide import AutoMultivariateNormal

import hyperbayes as hb
from hyperbayes.guides import Delta, MeanField
from hyperbayes.inference import (
    checkpoint,
    fit,
    predict,
    predict_from_samples,
    resolve_device,
    sample_posterior,
)
from hyperbayes.models import BNN, MLP, Categorical, Gaussian, priors
from tests.common import assert_close


def _data(n=30, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x.sum(-1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def _model(hidden=4, noise=0.5, dropout=0.0):
    return BNN(MLP([2, hidden, 1], "tanh", dropout=dropout), priors.Normal(1.0), Gaussian(noise))


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


# ------------------------------------------------------------------------------------------------
# fit: lengths, arguments and data checks
# ------------------------------------------------------------------------------------------------


def test_fit_steps():
    model = _model()
    guide = Delta(model)
    before = _state(guide)
    result = fit(model, guide, _data(), steps=7, lr=0.01)
    assert result.steps == 7 and len(result.losses) == 7
    assert result.best_step == 7 and result.validation == [] and result.resumed_from is None
    assert result.device == "cpu" and result.wall_time_s > 0
    assert all(math.isfinite(v) for v in result.losses)
    assert any(not torch.equal(before[k], v) for k, v in _state(guide).items())


@pytest.mark.parametrize(("epochs", "batch_size", "expected"),
                         [(2, 10, 6), (0.5, 10, 2), (1, None, 1), (3, 7, 15), (1, 100, 1)])
def test_fit_epochs_and_minibatches(epochs, batch_size, expected):
    model = _model()
    result = fit(model, Delta(model), _data(30), epochs=epochs, batch_size=batch_size)
    assert result.steps == expected and len(result.losses) == expected


def test_minibatch_loss_is_on_full_data_scale():
    """The data plate scales a minibatch likelihood by N / batch: losses are comparable."""
    model = _model()
    guide = Delta(model)
    x, y = _data(40)
    full = fit(model, guide, (x, y), steps=1, lr=1e-12)
    model2 = _model()
    mini = fit(model2, Delta(model2), (x, y), epochs=1, batch_size=10, lr=1e-12)
    assert len(mini.losses) == 4
    # the mean of the scaled minibatch losses over one epoch is the full-batch loss
    assert sum(mini.losses) / 4 == pytest.approx(full.losses[0], rel=1e-5)


def test_fit_needs_exactly_one_of_steps_and_epochs():
    model = _model()
    guide = Delta(model)
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        fit(model, guide, _data(), steps=3, epochs=1)
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        fit(model, guide, _data())
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1, got 0"):
        fit(model, guide, _data(), steps=0)


def test_fit_data_errors():
    model = _model()
    guide = Delta(model)
    x, y = _data()
    with pytest.raises(ValueError, match="x has 30 examples but y has 29"):
        fit(model, guide, (x, y[:29]), steps=1)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        fit(model, guide, (bad, y), steps=1)
    bad = y.clone()
    bad[0] = float("inf")
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        fit(model, guide, (x, bad), steps=1)
    with pytest.raises(ValueError, match="data is empty"):
        fit(model, guide, (x[:0], y[:0]), steps=1)
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        fit(model, guide, x, steps=1)
    with pytest.raises(TypeError, match="torch tensors"):
        fit(model, guide, (x.numpy(), y), steps=1)
    with pytest.raises(ValueError, match="unknown optimizer"):
        fit(model, guide, (x, y), steps=1, optimizer="adagrad")


def test_fit_accepts_split_and_dataset_objects():
    x, y = _data()
    model = _model()
    result = fit(model, Delta(model), SimpleNamespace(x=x, y=y), steps=2)
    assert result.steps == 2
    dataset = SimpleNamespace(train=SimpleNamespace(x=x, y=y), test=None,
                              val=SimpleNamespace(x=x[:10], y=y[:10]))
    model = _model()
    result = fit(model, Delta(model), dataset, steps=4, val_every=2)
    assert [v["step"] for v in result.validation] == [2, 4]


def test_fit_is_reproducible_with_a_seed():
    x, y = _data()
    runs = []
    for _ in range(2):
        model = _model()
        guide = MeanField(model)
        runs.append((fit(model, guide, (x, y), steps=5, batch_size=8, seed=3).losses,
                     _state(guide)))
    assert runs[0][0] == runs[1][0]
    _assert_same_state(runs[0][1], runs[1][1])


def test_callback_can_stop_early():
    seen = []
    model = _model()
    result = fit(model, Delta(model), _data(), steps=20,
                 callback=lambda step, loss: seen.append(step) or step == 4)
    assert seen == [1, 2, 3, 4] and result.steps == 4 and len(result.losses) == 4


# ------------------------------------------------------------------------------------------------
# Validation-based model selection, schedules and clipping
# ------------------------------------------------------------------------------------------------


def test_validation_selects_argmin_of_val_nll():
    x, y = _data(30)
    val = (x, -y)  # training on y makes the validation fit worse: the best step is early
    model = _model()
    guide = Delta(model)
    snapshots = {}
    result = fit(model, guide, (x, y), steps=40, lr=0.05, val=val, val_every=5,
                 callback=lambda step, loss: snapshots.__setitem__(step, _state(guide)))
    steps = [v["step"] for v in result.validation]
    assert steps == list(range(5, 41, 5))
    nll = [v["val_nll"] for v in result.validation]
    assert all(math.isfinite(v) for v in nll)
    assert result.best_step == steps[nll.index(min(nll))]
    assert result.best_step < 40
    # the kept parameters are those of the best step, not the last one
    _assert_same_state(_state(guide), snapshots[result.best_step])
    assert result.steps == 40


def test_validation_selects_by_accuracy_when_asked():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    y = (x[:, 0] > 0).long()
    val = (x, 1 - y)  # learning y makes validation accuracy fall: the best pass is early
    model = BNN(MLP([2, 8, 2]), priors.Normal(1.0), Categorical())
    guide = Delta(model)
    snapshots = {}
    result = fit(model, guide, (x, y), steps=30, lr=0.05, val=val, val_every=3,
                 select_by="val_accuracy",
                 callback=lambda step, loss: snapshots.__setitem__(step, _state(guide)))
    accuracy = [v["val_accuracy"] for v in result.validation]
    best = result.validation[accuracy.index(max(accuracy))]["step"]  # first of any ties
    assert result.best_step == best
    _assert_same_state(_state(guide), snapshots[best])
    with pytest.raises(ValueError, match="select_by must be"):
        fit(model, guide, (x, y), steps=1, select_by="accuracy")
    with pytest.raises(ValueError, match="not a validation metric"):  # regression: no accuracy
        fit(_model(), Delta(_model()), _data(10), steps=2, val=_data(10), val_every=1,
            select_by="val_accuracy")


def test_validation_without_selection_keeps_last_parameters():
    x, y = _data(30)
    model = _model()
    guide = Delta(model)
    snapshots = {}
    result = fit(model, guide, (x, y), steps=20, lr=0.05, val=(x, -y), val_every=5,
                 select_best=False,
                 callback=lambda step, loss: snapshots.__setitem__(step, _state(guide)))
    assert len(result.validation) == 4
    _assert_same_state(_state(guide), snapshots[20])


def test_validation_default_frequency_and_classification_metrics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 2, generator=g)
    y = (x[:, 0] > 0).long()
    model = BNN(MLP([2, 3, 2]), priors.Normal(1.0), Categorical())
    result = fit(model, MeanField(model), (x, y), steps=40, val=(x, y))
    assert [v["step"] for v in result.validation] == list(range(2, 41, 2))
    for v in result.validation:
        assert set(v) == {"step", "val_nll", "val_accuracy"}
        assert 0.0 <= v["val_accuracy"] <= 1.0 and v["val_nll"] > 0


def test_lr_schedules():
    x, y = _data()
    model = _model()
    result = fit(model, MeanField(model), (x, y), steps=10, lr=0.01, lr_schedule="cosine")
    assert result.steps == 10 and all(math.isfinite(v) for v in result.losses)
    for name in ("linear", "exponential", "constant"):
        model = _model()
        assert fit(model, Delta(model), (x, y), steps=3, lr_schedule=name).steps == 3
    # a callable schedule multiplies the learning rate: factor 0 freezes the parameters
    model = _model()
    guide = Delta(model)
    before = _state(guide)
    fit(model, guide, (x, y), steps=5, lr=0.1, lr_schedule=lambda step: 0.0)
    _assert_same_state(_state(guide), before)
    with pytest.raises(ValueError, match="unknown lr_schedule 'warmup'"):
        fit(model, guide, (x, y), steps=5, lr_schedule="warmup")


def test_cosine_schedule_changes_training():
    x, y = _data()
    states = []
    for schedule in (None, "cosine"):
        model = _model()
        guide = Delta(model)
        fit(model, guide, (x, y), steps=10, lr=0.1, lr_schedule=schedule)
        states.append(_state(guide))
    assert not torch.allclose(states[0]["values.fc0__weight"], states[1]["values.fc0__weight"])


def test_clip_norm_bounds_the_update():
    x, y = _data()
    y = 100 * y  # large gradients
    steps, lr, clip = 5, 1.0, 1e-3
    moved = {}
    for clip_norm in (None, clip):
        model = _model()
        guide = Delta(model)
        before = torch.cat([p.detach().reshape(-1).clone() for p in guide.parameters()])
        result = fit(model, guide, (x, y), steps=steps, lr=lr, optimizer="sgd",
                     clip_norm=clip_norm)
        assert all(math.isfinite(v) for v in result.losses)
        after = torch.cat([p.detach().reshape(-1) for p in guide.parameters()])
        moved[clip_norm] = float((after - before).norm())
    # SGD with momentum 0.9: the k-th update has norm ≤ lr · clip · (1 + 0.9 + … + 0.9^(k-1))
    bound = lr * clip * sum(sum(0.9**j for j in range(k)) for k in range(1, steps + 1))
    assert 0 < moved[clip] <= bound + 1e-7
    assert moved[None] > 100 * bound


# ------------------------------------------------------------------------------------------------
# Checkpoints and resume
# ------------------------------------------------------------------------------------------------


def _train(path, steps, batch_size=None, checkpoint_every=10):
    x, y = _data(30)
    model = _model()
    guide = MeanField(model)
    result = fit(model, guide, (x, y), steps=steps, lr=0.02, batch_size=batch_size,
                 checkpoint=path, checkpoint_every=checkpoint_every)
    return result, _state(guide)


def test_checkpoint_resume_is_exact(tmp_path):
    full, full_state = _train(tmp_path / "a" / "run.ckpt", 20)
    assert os.listdir(tmp_path / "a") == ["run.ckpt"]  # written atomically: no temp files left
    saved = checkpoint.load(tmp_path / "a" / "run.ckpt")
    assert saved["step"] == 20 and len(saved["losses"]) == 20

    first, _ = _train(tmp_path / "b" / "run.ckpt", 10)
    assert first.steps == 10 and checkpoint.load(tmp_path / "b" / "run.ckpt")["step"] == 10
    resumed, resumed_state = _train(tmp_path / "b" / "run.ckpt", 20)  # fresh model and guide
    assert resumed.resumed_from == 10 and resumed.steps == 20
    # the training time adds the first call's, recorded in the checkpoint
    assert resumed.wall_time_s < resumed.total_wall_time_s <= (
        first.total_wall_time_s + resumed.wall_time_s)
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    _assert_same_state(resumed_state, full_state, atol=1e-7)
    assert os.listdir(tmp_path / "b") == ["run.ckpt"]


def test_checkpoint_resume_is_exact_mid_epoch(tmp_path):
    """With minibatches (3 steps per epoch), step 10 is in the middle of an epoch."""
    full, full_state = _train(tmp_path / "a.ckpt", 20, batch_size=10)
    _train(tmp_path / "b.ckpt", 10, batch_size=10)
    resumed, resumed_state = _train(tmp_path / "b.ckpt", 20, batch_size=10)
    assert resumed.resumed_from == 10
    assert resumed.losses == pytest.approx(full.losses, abs=1e-6)
    _assert_same_state(resumed_state, full_state, atol=1e-7)


def test_checkpoint_resume_at_epoch_boundary(tmp_path):
    full, full_state = _train(tmp_path / "a.ckpt", 12, batch_size=10, checkpoint_every=6)
    _train(tmp_path / "b.ckpt", 6, batch_size=10, checkpoint_every=6)
    resumed, resumed_state = _train(tmp_path / "b.ckpt", 12, batch_size=10, checkpoint_every=6)
    assert resumed.resumed_from == 6
    _assert_same_state(resumed_state, full_state, atol=1e-7)


def test_resume_false_starts_over(tmp_path):
    path = tmp_path / "run.ckpt"
    _train(path, 10)
    x, y = _data(30)
    model = _model()
    result = fit(model, MeanField(model), (x, y), steps=3, checkpoint=path, resume=False)
    assert result.resumed_from is None and result.steps == 3
    assert checkpoint.load(path)["step"] == 3


def test_checkpoint_roundtrip_and_errors(tmp_path):
    path = tmp_path / "sub" / "c.ckpt"
    payload = {"w": torch.arange(6.0).reshape(2, 3), "step": 4, "name": "x", "list": [1.5, 2]}
    assert checkpoint.save(path, payload) == path
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["w"], payload["w"])
    assert loaded["step"] == 4 and loaded["name"] == "x" and loaded["list"] == [1.5, 2]
    assert os.listdir(path.parent) == ["c.ckpt"]
    data = path.read_bytes()

    corrupt = tmp_path / "corrupt.ckpt"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(corrupt)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) - 7])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(truncated)

    other = tmp_path / "other.ckpt"
    other.write_bytes(bytes(torch.randint(0, 256, (300,), dtype=torch.uint8).tolist()))
    with pytest.raises(checkpoint.CheckpointError, match="not a hyperbayes checkpoint"):
        checkpoint.load(other)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.ckpt")
    assert issubclass(checkpoint.CheckpointError, ValueError)


def test_a_checkpoint_load_cannot_read_is_refused_when_saved(tmp_path):
    """What the safe load would refuse is refused at save time, with nothing written; a file
    is readable as the umask allows (not mkstemp's 0600); a damaged header is a
    CheckpointError."""
    import numpy as np

    with pytest.raises(TypeError, match="safe load cannot read back"):
        checkpoint.save(tmp_path / "meta.ckpt", {"accuracy": np.float64(0.9)})
    assert not list(tmp_path.iterdir())
    path = checkpoint.save(tmp_path / "c.ckpt", {"step": 1})
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    # results and data caches are written the same way (hyperbayes.files.atomic_write)
    from hyperbayes.datasets.real import _write_npz_atomic
    from hyperbayes.experiments.common import write_json

    written = [write_json(tmp_path / "metrics.json", {"a": 1}), tmp_path / "cache.npz"]
    _write_npz_atomic(written[1], {"x": np.zeros(2)})
    for other in written:
        assert other.stat().st_mode & 0o777 == 0o666 & ~mask, other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt", "cache.npz", "metrics.json"]
    data = bytearray(path.read_bytes())
    data[len(checkpoint._MAGIC) + 3] = 0xFF  # inside the checksum
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)


def test_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"step": 1})

    def crash(fd):
        raise OSError("disk full")

    import hyperbayes.files

    monkeypatch.setattr(hyperbayes.files.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"step": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.ckpt"]  # the temporary file was removed
    assert checkpoint.load(path) == {"step": 1}


def test_fit_refuses_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    _train(path, 10)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        _train(path, 20)


# ------------------------------------------------------------------------------------------------
# Devices
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpoint_resumes_on_cuda(tmp_path):
    """Checkpoints load with map_location=cuda; the RNG states must stay CPU byte tensors."""
    model = _model()
    first = fit(model, Delta(model), _data(), steps=4, checkpoint=tmp_path / "c.pt",
                checkpoint_every=2, device="cuda", progress=False)
    model = _model()
    again = fit(model, Delta(model), _data(), steps=6, checkpoint=tmp_path / "c.pt",
                device="cuda", progress=False)
    assert again.resumed_from == first.steps == 4 and again.steps == 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is available")
def test_resolve_device_cuda_without_gpu_raises():
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        resolve_device(torch.device("cuda:0"))
    assert resolve_device("auto") == torch.device("cpu")
    model = _model()
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        fit(model, Delta(model), _data(), steps=1, device="cuda")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == "cpu"       # the suite pins HYPERBAYES_DEVICE=cpu
    monkeypatch.delenv("HYPERBAYES_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    monkeypatch.setenv("HYPERBAYES_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("auto")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------------------
# Prediction
# ------------------------------------------------------------------------------------------------


class CountingMLP(MLP):
    """An MLP that counts its batched forward passes."""

    calls = 0

    def _forward(self, params, x, num_samples, grouped=False):
        CountingMLP.calls += 1
        return super()._forward(params, x, num_samples, grouped)


def test_predict_regression_shapes_and_single_pass():
    model = BNN(CountingMLP([2, 4, 1]), priors.Normal(1.0), Gaussian(scale=None))
    guide = MeanField(model, init_scale=0.1)
    guide_calls = []
    guide.register_forward_hook(lambda *args: guide_calls.append(1))
    x = torch.randn(10, 2)
    CountingMLP.calls = 0
    pred = predict(model, guide, x, num_samples=50)
    assert len(guide_calls) == 1 and CountingMLP.calls == 1  # no loop over samples
    assert pred.outputs.shape == (50, 10, 1) and pred.num_samples == 50
    assert pred.task == "regression" and pred.f.shape == (50, 10)
    assert pred.noise_std.shape == (50,) and (pred.noise_std > 0).all()
    assert pred.mean().shape == (10,) and pred.std().shape == (10,)
    assert (pred.std(include_noise=True) > pred.std()).all()
    with pytest.raises(AttributeError, match="classification"):
        _ = pred.probs
    assert guide.training  # predict puts the guide back in training mode
    # chunked evaluation: one pass per chunk, same result for the same samples
    samples = sample_posterior(model, guide, 7)
    CountingMLP.calls = 0
    chunked = predict_from_samples(model, samples, x, batch_size=4)
    assert CountingMLP.calls == 3
    assert_close(chunked.outputs, predict_from_samples(model, samples, x).outputs, atol=1e-6)


def test_sample_posterior_shapes():
    model = BNN(MLP([2, 4, 1]), priors.Normal(1.0), Gaussian(scale=None))
    for guide in (Delta(model), MeanField(model)):
        samples = sample_posterior(model, guide, 13)
        assert set(samples) == {*model.net.param_specs, "noise_scale"}
        for name, spec in model.net.param_specs.items():
            assert samples[name].shape == (13, *spec.shape)
        assert samples["noise_scale"].shape == (13,)
    # MeanField samples differ across the sample dim; Delta samples do not
    assert samples["fc0.weight"].std(0).min() > 0


def test_predictive_std_is_the_mixtures_and_predict_keeps_each_layers_mode():
    """Prediction.std is the spread of the S-sample mixture (as metrics.predictive_mean_std; 0
    for one sample, not NaN), and predict leaves a layer the user froze in eval mode frozen."""
    from torch import nn

    model = BNN(MLP([1, 8, 1]), priors.Normal(1.0), Gaussian(0.1))
    guide = MeanField(model, init_scale=0.5)
    x = torch.linspace(-1, 1, 5)[:, None]
    assert torch.equal(predict(model, guide, x, 1).std(), torch.zeros(5))
    pred = predict(model, guide, x, 7)
    _, expected = hb.inference.metrics.predictive_mean_std(pred.f)
    assert_close(pred.std(), expected, atol=1e-6)
    body = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    body[1].eval()  # running statistics frozen by the user
    module_model = BNN(body, priors.Normal(1.0), Gaussian(0.1))
    module_model.train()
    body[1].eval()
    predict(module_model, Delta(module_model), torch.randn(6, 2), 3)
    assert module_model.training and body[0].training and not body[1].training


def test_predict_classification_probs():
    model = BNN(MLP([2, 5, 3]), priors.Normal(1.0), Categorical(clip=True))
    guide = MeanField(model, init_scale=0.5)
    pred = predict(model, guide, torch.randn(8, 2), num_samples=6)
    assert pred.outputs.shape == (6, 8, 3) and pred.probs.shape == (6, 8, 3)
    assert_close(pred.probs.sum(-1), torch.ones(6, 8), atol=1e-6)
    assert pred.mean().shape == (8, 3)
    assert_close(pred.mean().sum(-1), torch.ones(8), atol=1e-6)
    assert pred.probs.min() >= 1e-3 / (0.999 + 2e-3) - 1e-7  # clipped
    with pytest.raises(AttributeError, match="regression"):
        _ = pred.f


def test_predict_delta_has_zero_std_without_dropout_and_positive_with():
    x = torch.randn(9, 2)
    model = _model()
    pred = predict(model, Delta(model), x, num_samples=20)
    assert pred.outputs.shape == (20, 9, 1)
    assert torch.equal(pred.std(), torch.zeros(9))
    model = _model(hidden=16, dropout=0.3)
    pred = predict(model, Delta(model), x, num_samples=20)
    assert pred.outputs.shape == (20, 9, 1) and (pred.std() > 0).all()


def test_predict_matches_closed_form_and_a_loop_of_single_draws():
    """Linear net + MeanField: f(x) ~ N(x·μ_w + μ_b, Σ x_i² τ_i² + τ_b²) exactly."""
    model = BNN(MLP([2, 1]), priors.Normal(1.0), Gaussian(0.1))
    guide = MeanField(model)
    with torch.no_grad():
        guide.loc_params["fc0__weight"].copy_(torch.tensor([[1.0, -2.0]]))
        guide.loc_params["fc0__bias"].copy_(torch.tensor([0.5]))
        guide.log_scale_params["fc0__weight"].copy_(torch.tensor([[0.0, -1.0]]))
        guide.log_scale_params["fc0__bias"].copy_(torch.tensor([-0.5]))
    tau = guide.scales()
    x = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-1.0, 2.0]])
    mean = x @ torch.tensor([1.0, -2.0]) + 0.5
    std = ((x**2) @ (tau["fc0.weight"][0] ** 2) + tau["fc0.bias"] ** 2).sqrt()

    s = 2000
    batched = predict(model, guide, x, num_samples=s)
    assert_close(batched.mean(), mean, atol=4 * float(std.max()) / math.sqrt(s), rtol=0)
    assert_close(batched.std(), std, atol=0, rtol=0.06)

    loop = torch.cat([predict(model, guide, x, num_samples=1).f for _ in range(400)])
    assert_close(loop.mean(0), mean, atol=4 * float(std.max()) / math.sqrt(400), rtol=0)
    assert_close(loop.std(0), std, atol=0, rtol=0.15)
    # batched samples are independent across the sample dim (not one draw repeated)
    assert batched.f[:, 1].unique().numel() == s


def test_predict_from_samples_errors():
    model = _model()
    samples = sample_posterior(model, Delta(model), 3)
    x = torch.randn(4, 2)
    with pytest.raises(KeyError, match=r"missing parameters \['fc1.bias'\]"):
        predict_from_samples(model, {k: v for k, v in samples.items() if k != "fc1.bias"}, x)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        predict_from_samples(model, samples, bad)
    with pytest.raises(TypeError, match="x must be a torch tensor"):
        predict_from_samples(model, samples, x.tolist())
    with pytest.raises(ValueError, match="num_samples must be"):
        predict(model, Delta(model), x, num_samples=0)


def test_predict_from_samples_accepts_shared_parameters():
    """Parameters without the sample dim are shared by all S samples (the Bayesian-hypernetwork
    case: weight-norm directions are point estimates, scales and biases are sampled)."""
    net = MLP([2, 4, 1], "tanh", weight_norm=True)
    model = BNN(net, priors.Normal(1.0), Gaussian(0.1))
    s = 3
    samples = {k: torch.randn(*spec.shape) if spec.role == "direction"
               else torch.randn(s, *spec.shape) for k, spec in net.param_specs.items()}
    assert next(iter(samples)) == "fc0.direction"
    x = torch.randn(5, 2)
    pred = predict_from_samples(model, samples, x)
    assert pred.outputs.shape == (s, 5, 1)
    for i in range(s):
        single = {k: v if net.param_specs[k].role == "direction" else v[i]
                  for k, v in samples.items()}
        assert_close(pred.outputs[i], net(single, x), atol=1e-5)


def test_predict_with_pyro_autoguide():
    x, y = _data(20)
    model = _model()
    guide = AutoMultivariateNormal(model, init_scale=0.05)
    guide(x, y)  # initialise the guide's parameters
    result = fit(model, guide, (x, y), steps=5, lr=0.01)
    assert result.steps == 5
    samples = sample_posterior(model, guide, 11)
    for name, spec in model.net.param_specs.items():
        assert samples[name].shape == (11, *spec.shape)
        assert samples[name].std(0).min() > 0
    pred = predict(model, guide, x, num_samples=11)
    assert pred.outputs.shape == (11, 20, 1)
    assert torch.isfinite(pred.outputs).all() and (pred.std() > 0).all()


def test_prediction_to_device():
    model = _model()
    pred = predict(model, Delta(model), torch.randn(3, 2), num_samples=2)
    moved = pred.to("cpu")
    assert torch.equal(moved.outputs, pred.outputs) and moved.task == "regression"


def test_resume_after_a_finished_run_continues_from_the_last_state(tmp_path):
    """With validation picking an early best step, the checkpoint still holds the last state."""
    torch.manual_seed(0)
    x, vx = torch.randn(64, 3), torch.randn(32, 3)
    y, vy = (x[:, 0] > 0).long(), (vx[:, 0] <= 0).long()  # validation gets worse: early best

    def run(checkpoint, steps):
        model = BNN(MLP([3, 8, 2]), priors.Normal(1.0), Categorical())
        guide = MeanField(model, init_scale=0.1)
        return hb.inference.fit(model, guide, (x, y), steps=steps, batch_size=16, lr=0.05,
                                val=(vx, vy), val_every=5, checkpoint=checkpoint,
                                checkpoint_every=10, progress=False)

    full = run(None, 40)
    first = run(tmp_path / "c.pt", 20)
    assert first.best_step < 20
    resumed = run(tmp_path / "c.pt", 40)
    assert resumed.resumed_from == 20
    assert_close(torch.tensor(resumed.losses[20:]), torch.tensor(full.losses[20:]),
                 atol=1e-3, rtol=1e-5)
