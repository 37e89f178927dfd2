"""Helpers shared by the tests."""

import torch


def assert_close(actual, expected, atol=1e-5, rtol=1e-4, msg=""):
    """torch.testing.assert_close on tensors or numbers, with a readable message."""
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64),
                               atol=atol, rtol=rtol, msg=msg or None)


def conjugate_linear_regression(sigma: float = 0.5, prior_scale: float = 1.0) -> dict:
    """Bayesian linear regression y = x·w + b + N(0, σ²), w, b ~ N(0, prior_scale²), on 20
    seeded points: the data, the design matrix, the posterior (mean, precision, covariance over
    [w₁, w₂, b]) and the log marginal likelihood log Z, all in closed form."""
    g = torch.Generator().manual_seed(0)
    n, d = 20, 2
    x = torch.randn(n, d, generator=g)
    y = x @ torch.tensor([1.0, -0.5]) + 0.3 + sigma * torch.randn(n, generator=g)
    design = torch.cat([x, torch.ones(n, 1)], 1).double()
    precision = design.T @ design / sigma**2 + torch.eye(d + 1) / prior_scale**2
    mean = torch.linalg.solve(precision, design.T @ y.double() / sigma**2)
    marginal = torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=torch.float64),
        sigma**2 * torch.eye(n, dtype=torch.float64) + prior_scale**2 * design @ design.T)
    return {"x": x, "y": y, "design": design, "precision": precision, "mean": mean,
            "cov": torch.linalg.inv(precision), "log_z": marginal.log_prob(y.double()).item()}
