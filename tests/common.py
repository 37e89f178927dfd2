"""Helpers shared by the tests."""

import torch


def assert_close(actual, expected, atol=1e-5, rtol=1e-4, msg=""):
    """torch.testing.assert_close on tensors or numbers, with a readable message."""
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64),
                               atol=atol, rtol=rtol, msg=msg or None)
