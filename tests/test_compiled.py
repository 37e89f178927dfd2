"""The compiled SVI step: its loss, gradients and random draws equal the eager step's for every
registered method it supports, fit trains the same parameters with it, and what it cannot
compile runs eagerly with a warning saying why."""

import pytest
import torch

import hyperbayes as hb
from hyperbayes.inference import AdversarialELBO
from hyperbayes.inference.compiled import CompiledStep, CompileFallback, unsupported_reason
from hyperbayes.models import Categorical, Gaussian, priors

FAMILIES = {"regression": ([2, 8, 1], Gaussian(0.1), torch.randn(16, 1)),
            "classification": ([2, 8, 3], Categorical(), torch.randint(0, 3, (16,)))}


def _losses_and_grads(step, params, calls: int = 2):
    """(loss, gradients) of ``calls`` successive steps from seed 0 (no parameter update, so the
    second differs from the first only by its random draws)."""
    torch.manual_seed(0)
    out = []
    for _ in range(calls):
        for p in params:
            p.grad = None
        value = step()
        out.append((value.detach(), [None if p.grad is None else p.grad.clone()
                                     for p in params]))
    return out


# the base methods on regression run by default; their variants and classification (≈20 s of
# tracing on 2 cores) with `make test-all`
@pytest.mark.parametrize("family, variants", [
    ("regression", False),
    pytest.param("regression", True, marks=pytest.mark.slow),
    pytest.param("classification", True, marks=pytest.mark.slow)])
def test_traced_step_equals_the_eager_step_for_every_method(family, variants):
    sizes, likelihood, y = FAMILIES[family]
    x = torch.randn(16, 2)
    base = set(hb.methods.available(variants=False))
    names = set(hb.methods.available(variants=True)) - base if variants else base
    for name in sorted(names):
        model, guide, loss, _ = hb.methods.setup(name, family, sizes, priors.Normal(1.0),
                                                 likelihood)
        reason = unsupported_reason(loss)
        if isinstance(loss, AdversarialELBO):  # the one loss that cannot be traced
            assert "trains its own state" in reason
            continue
        assert reason is None, name
        params = [p for p in list(model.parameters()) + list(guide.parameters())
                  if p.requires_grad]
        traced = CompiledStep(loss, model, guide, backend=None)

        def eager(loss=loss, model=model, guide=guide):
            value = loss.differentiable_loss(model, guide, x, y, 100)
            value.backward()
            return value

        for (c_value, c_grads), (e_value, e_grads) in zip(
                _losses_and_grads(lambda traced=traced: traced(x, y, 100), params),
                _losses_and_grads(eager, params), strict=True):
            torch.testing.assert_close(c_value, e_value, rtol=1e-5, atol=1e-5, msg=name)
            for c_grad, e_grad in zip(c_grads, e_grads, strict=True):
                if e_grad is None:  # unused by the loss: the traced step gives zeros
                    assert c_grad is None or not c_grad.any(), name
                else:
                    torch.testing.assert_close(c_grad, e_grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", ["flow", "meanfield"])
def test_traced_step_equals_the_eager_step_on_a_torch_module(name):
    """A user's module through TorchNet, weight norm included (the flow's scales): the trace
    swaps the module's parameters for plain tensors, which the forward must not require to be
    nn.Parameters (it did: the flow's step ran eagerly with a warning)."""
    from torch import nn

    body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model, guide, loss, _ = hb.methods.setup(name, "classification", body, priors.Normal(1.0),
                                             Categorical())
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    params = [p for p in list(model.parameters()) + list(guide.parameters()) if p.requires_grad]
    traced = CompiledStep(loss, model, guide, backend=None)

    def eager():
        value = loss.differentiable_loss(model, guide, x, y, 100)
        value.backward()
        return value

    for (c_value, c_grads), (e_value, e_grads) in zip(
            _losses_and_grads(lambda: traced(x, y, 100), params),
            _losses_and_grads(eager, params), strict=True):
        torch.testing.assert_close(c_value, e_value, rtol=1e-5, atol=1e-5)
        for c_grad, e_grad in zip(c_grads, e_grads, strict=True):
            if e_grad is not None:
                torch.testing.assert_close(c_grad, e_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [True, "auto"])
def test_fit_with_the_inductor_compiled_step_trains_the_same_parameters(mode, monkeypatch):
    # "auto" decides after timing its probe steps: with no time threshold it must compile
    monkeypatch.setattr(hb.inference.svi, "COMPILE_AUTO_SECONDS", 0.0)
    built = []
    monkeypatch.setattr(hb.inference.compiled.CompiledStep, "_trace", _counting(
        hb.inference.compiled.CompiledStep._trace, built))
    data = hb.datasets.load("cubic")
    train = (data.train.x[:64] / 4, data.train.y[:64] / data.train.y.std())
    states = {}
    for compile_ in (False, mode):
        model, guide, loss, _ = hb.methods.setup("meanfield", "regression", [1, 16, 1],
                                                 priors.Normal(1.0), Gaussian(0.1))
        hb.inference.fit(model, guide, train, steps=25, batch_size=32, lr=1e-2, loss=loss,
                         progress=False, warn=False, compile=compile_)
        states[compile_] = guide.state_dict()
    assert built  # the step was compiled
    for key, value in states[False].items():
        torch.testing.assert_close(states[mode][key], value, rtol=1e-4, atol=1e-5, msg=key)


def _counting(trace, calls: list):
    def counted(self, *args):
        calls.append(1)
        return trace(self, *args)
    return counted


def test_what_cannot_be_compiled_runs_eagerly_with_a_warning():
    model, guide, loss, _ = hb.methods.setup("bbh_adversarial", "regression", [1, 8, 1],
                                             priors.Normal(1.0), Gaussian(0.1))
    data = (torch.randn(16, 1), torch.randn(16, 1))
    with pytest.warns(CompileFallback, match="trains its own state"):
        hb.inference.fit(model, guide, data, steps=3, loss=loss, progress=False, warn=False,
                         compile=True)
    model, guide, loss, _ = hb.methods.setup("meanfield", "regression", [1, 8, 1],
                                             priors.Normal(1.0), Gaussian(0.1))
    with pytest.warns(CompileFallback, match="kl_schedule"):
        hb.inference.fit(model, guide, data, steps=3, loss=loss, progress=False, warn=False,
                         compile=True, kl_schedule="warmup")
    with pytest.raises(ValueError, match="compile must be"):
        hb.inference.fit(model, guide, data, steps=1, compile="yes")
