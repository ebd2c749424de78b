"""Tests of hetnet.datasets: IDX reading/writing, locating sets, loaders, the shipped sample."""

import gzip
import hashlib
import json
import shutil
import struct
import sys

import numpy as np
import pytest

from hetnet import datasets
from hetnet.datasets import DatasetError, DatasetNotFoundError, read_idx, write_idx

REPO_DATASETS = datasets._REPO_DATASETS
SAMPLE = datasets.DATASETS["fashion-mnist"]
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _write_set(directory, n_train=20, n_test=10, gz=True, seed=0, shape=(28, 28)):
    """A small random MNIST-style set in ``directory``; returns its arrays by file stem."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = np.arange(n, dtype=np.uint8) % 10
    for stem, array in arrays.items():
        write_idx(directory / (stem + (".gz" if gz else "")), array)
    return arrays


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Empty stand-ins for the three search roots; HETNET_DATA points at the first."""
    paths = {k: tmp_path / k for k in ("env", "repo", "system")}
    for p in paths.values():
        p.mkdir()
    monkeypatch.setenv("HETNET_DATA", str(paths["env"]))
    monkeypatch.setattr(datasets, "_REPO_DATASETS", paths["repo"])
    monkeypatch.setattr(datasets, "_SYSTEM_DATASETS", paths["system"])
    return paths


# --- IDX files --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (5, 3, 4)])
def test_idx_round_trip(tmp_path, suffix, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = write_idx(tmp_path / f"a{suffix}", array)
    head = path.read_bytes()[:4]
    if suffix:
        assert head[:2] == b"\x1f\x8b"
    else:
        assert head == bytes([0, 0, 8, len(shape)])
    back = read_idx(path, ndim=len(shape))
    assert back.dtype == np.uint8 and back.flags.writeable and back.flags.c_contiguous
    np.testing.assert_array_equal(back, array)


def test_read_idx_hand_made_file(tmp_path):
    # Written by hand so the reader is checked against the format, not against write_idx.
    data = bytes(range(24))
    (tmp_path / "x").write_bytes(struct.pack(">IIII", 0x0803, 2, 3, 4) + data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"),
                                  np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    # Compression is detected from the content, whatever the name.
    (tmp_path / "y").write_bytes(gzip.compress(struct.pack(">II", 0x0801, 3) + b"\x01\x02\x03"))
    np.testing.assert_array_equal(read_idx(tmp_path / "y"), [1, 2, 3])


def test_write_idx_gzip_is_deterministic(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    a = write_idx(tmp_path / "a.gz", array).read_bytes()
    b = write_idx(tmp_path / "b.gz", array).read_bytes()
    assert a == b


def test_write_idx_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match="1-d .* or 3-d"):
        write_idx(tmp_path / "a", np.zeros((2, 2), dtype=np.uint8))


@pytest.mark.parametrize("magic", [0x0802, 0x0D03, 0x08030000, 0x1234])
def test_bad_magic(tmp_path, magic):
    path = tmp_path / "bad"
    path.write_bytes(struct.pack(">II", magic, 1) + b"\x00" * 16)
    with pytest.raises(DatasetError, match="magic number") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_magic_of_the_other_kind(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError, match="0x00000801 marks labels .* expected images"):
        read_idx(path, ndim=3)
    with pytest.raises(ValueError, match="ndim"):
        read_idx(path, ndim=2)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("change, message", [(-1, "truncated"), (+3, "trailing bytes")])
def test_size_disagrees_with_header(tmp_path, gz, change, message):
    raw = write_idx(tmp_path / "ok", np.zeros((2, 3, 3), dtype=np.uint8)).read_bytes()
    raw = raw[:change] if change < 0 else raw + b"\x00" * change
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetError, match=message) as info:
        read_idx(path)
    assert "(2, 3, 3)" in str(info.value) and str(path) in str(info.value)


def test_truncated_header(tmp_path):
    (tmp_path / "a").write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(struct.pack(">II", 0x0803, 5))
    with pytest.raises(DatasetError, match="truncated IDX header"):
        read_idx(tmp_path / "b")


def test_truncated_or_corrupt_gzip(tmp_path):
    array = np.random.default_rng(2).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    good = write_idx(tmp_path / "good.gz", array).read_bytes()
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="gzip") as info:
        read_idx(tmp_path / "cut.gz")
    assert "cut.gz" in str(info.value)
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # inside the CRC-32 trailer
    (tmp_path / "crc.gz").write_bytes(bytes(flipped))
    with pytest.raises(DatasetError, match="gzip"):
        read_idx(tmp_path / "crc.gz")


def test_missing_file(tmp_path):
    path = tmp_path / "nope-idx1-ubyte.gz"
    with pytest.raises(DatasetNotFoundError) as info:
        read_idx(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


# --- finding and loading sets -------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_load_from_hetnet_data(roots, gz):
    arrays = _write_set(roots["env"] / "fashion-mnist", gz=gz)
    assert datasets.find_dataset("fashion-mnist") == (roots["env"] / "fashion-mnist", "full")

    X, y = datasets.load_fashion_mnist("train")
    assert X.shape == (20, 1, 28, 28) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (20,) and y.dtype == np.int64
    np.testing.assert_array_equal(X[:, 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])

    X, y = datasets.load_fashion_mnist("test", normalize=False, flatten=True)
    assert X.shape == (10, 784) and X.dtype == np.uint8
    np.testing.assert_array_equal(X, arrays["t10k-images-idx3-ubyte"].reshape(10, -1))

    X, _ = datasets.load_fashion_mnist("test", flatten=True)
    assert X.shape == (10, 784) and X.dtype == np.float32 and 0 <= X.min() <= X.max() <= 1


def test_search_order(roots, monkeypatch):
    for i, key in enumerate(("env", "repo", "system")):
        _write_set(roots[key] / "mnist", n_train=11 + i)
    extra = roots["env"].parent / "extra"
    _write_set(extra / "mnist", n_train=9)

    monkeypatch.setenv("HETNET_DATA", f"{roots['env'] / 'empty'}:{extra}:{roots['env']}")
    assert datasets.find_dataset("mnist").path == extra / "mnist"
    monkeypatch.setenv("HETNET_DATA", str(roots["env"]))
    assert len(datasets.load_mnist()[1]) == 11
    monkeypatch.delenv("HETNET_DATA")
    assert len(datasets.load_mnist()[1]) == 12
    shutil.rmtree(roots["repo"] / "mnist")
    assert datasets.find_dataset("mnist", "full") == (roots["system"] / "mnist", "full")
    assert len(datasets.load_mnist(source="full")[1]) == 13


def test_raw_preferred_over_gz_and_mixed_allowed(roots):
    arrays = _write_set(roots["env"] / "mnist", gz=True)
    # A raw copy of one file, different from its .gz twin, must be the one read.
    write_idx(roots["env"] / "mnist" / "t10k-labels-idx1-ubyte",
              np.full(10, 7, dtype=np.uint8))
    _, y = datasets.load_mnist("test")
    assert (y == 7).all()
    np.testing.assert_array_equal(datasets.load_mnist("train")[1],
                                  arrays["train-labels-idx1-ubyte"])


def test_full_set_missing(roots):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_fashion_mnist(source="full")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "HETNET_DATA" in message
    for key in ("env", "repo", "system"):
        assert str(roots[key] / "fashion-mnist") in message

    with pytest.raises(FileNotFoundError, match="no Debian package ships MNIST"):
        datasets.load_mnist()
    with pytest.raises(DatasetNotFoundError, match="ships no sample of mnist"):
        datasets.load_mnist(source="sample")


def test_incomplete_set(roots):
    _write_set(roots["env"] / "fashion-mnist")
    (roots["env"] / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="incomplete set: missing t10k-labels"):
        datasets.load_fashion_mnist()


def test_images_and_labels_disagree(roots):
    directory = roots["env"] / "fashion-mnist"
    _write_set(directory)
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DatasetError, match="holds 20 images but .* holds 19 labels"):
        datasets.load_fashion_mnist("train")
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.full(20, 10, dtype=np.uint8))
    with pytest.raises(DatasetError, match="label 10 out of range"):
        datasets.load_fashion_mnist("train")


def test_wrong_image_size(roots):
    _write_set(roots["env"] / "fashion-mnist", shape=(32, 32))
    with pytest.raises(DatasetError, match="images are 32x32, fashion-mnist images are 28x28"):
        datasets.load_fashion_mnist()


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        datasets.load_fashion_mnist("valid")
    with pytest.raises(ValueError, match="source"):
        datasets.load_fashion_mnist(source="web")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.find_dataset("cifar-10")
    with pytest.raises(ValueError, match="load_digits"):
        datasets.find_dataset("digits")


# --- the shipped sample -------------------------------------------------------------------

needs_sample = pytest.mark.skipif(
    not (REPO_DATASETS / SAMPLE.sample).is_dir(),
    reason="the repository's datasets/ folder is not present (non-editable install)")


@needs_sample
@pytest.mark.parametrize("split, per_class", [("train", 600), ("test", 100)])
def test_sample_loads(split, per_class):
    X, y = datasets.load_fashion_mnist(split, source="sample")
    n = 10 * per_class
    assert n == SAMPLE.sample_n_samples[split]
    assert X.shape == (n, 1, 28, 28) and X.dtype == np.float32 and X.flags.c_contiguous
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [per_class] * 10)

    raw, _ = datasets.load_fashion_mnist(split, source="sample", normalize=False, flatten=True)
    assert raw.shape == (n, 784) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw.reshape(X.shape) / np.float32(255), X)


@needs_sample
def test_auto_falls_back_to_sample(roots, monkeypatch):
    monkeypatch.setattr(datasets, "_REPO_DATASETS", REPO_DATASETS)
    assert datasets.find_dataset("fashion-mnist") == (
        REPO_DATASETS / "fashion-mnist-sample", "sample")
    assert datasets.load_fashion_mnist("test")[0].shape == (1000, 1, 28, 28)
    # ...but a full set anywhere wins.
    _write_set(roots["system"] / "fashion-mnist")
    assert datasets.load_fashion_mnist("test")[0].shape == (10, 1, 28, 28)


@needs_sample
def test_sample_checksums_and_manifest():
    manifest = json.loads((REPO_DATASETS / "MANIFEST.json").read_text())
    files = manifest["samples"][SAMPLE.sample]["files"]
    assert set(files) == set(SAMPLE.sample_sha256) == {f + ".gz" for f in FILES}
    total = 0
    for name, expected in SAMPLE.sample_sha256.items():
        data = (REPO_DATASETS / SAMPLE.sample / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected == files[name]["sha256"]
        total += len(data)
    assert total < 5_000_000
    assert set(manifest["datasets"]) == set(datasets.DATASETS)
    for name, info in datasets.DATASETS.items():
        entry = manifest["datasets"][name]
        assert (entry["source"], entry["licence"]) == (info.source, info.licence)
    assert manifest["datasets"]["fashion-mnist"]["licence"] == "MIT"


@needs_sample
def test_sample_checksum_mismatch(roots):
    copy = roots["env"] / SAMPLE.sample
    shutil.copytree(REPO_DATASETS / SAMPLE.sample, copy)
    path = copy / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    assert datasets.load_fashion_mnist("train", source="sample")[0].shape[0] == 6000
    with pytest.raises(DatasetError, match="SHA-256") as info:
        datasets.load_fashion_mnist("test", source="sample")
    assert str(path) in str(info.value)


@needs_sample
def test_sample_matches_full_set():
    try:
        location = datasets.find_dataset("fashion-mnist", "full")
    except DatasetNotFoundError:
        pytest.skip("the full Fashion-MNIST set is not installed")
    X_full, y_full = datasets.load_fashion_mnist("test", source="full", normalize=False)
    assert X_full.shape == (10000, 1, 28, 28), location
    np.testing.assert_array_equal(np.bincount(y_full), [1000] * 10)
    X, y = datasets.load_fashion_mnist("test", source="sample", normalize=False)
    # The sample is the first 100 of each class, in the original order.
    keep = np.sort(np.concatenate([np.flatnonzero(y_full == c)[:100] for c in range(10)]))
    np.testing.assert_array_equal(X, X_full[keep])
    np.testing.assert_array_equal(y, y_full[keep])


def test_full_train_set_if_installed():
    try:
        datasets.find_dataset("fashion-mnist", "full")
    except DatasetNotFoundError:
        pytest.skip("the full Fashion-MNIST set is not installed")
    X, y = datasets.load_fashion_mnist("train", source="full")
    assert X.shape == (60000, 1, 28, 28) and X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)


# --- digits and describe ------------------------------------------------------------------

def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = datasets.load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.shape == (1797,) and y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    X, _ = datasets.load_digits(normalize=False, flatten=True)
    assert X.shape == (1797, 64) and X.dtype == np.uint8 and X.max() == 16


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load_digits()


def test_describe(roots):
    _write_set(roots["system"] / "fashion-mnist")
    text = datasets.describe()
    for info in datasets.DATASETS.values():
        assert info.name in text and info.source in text and info.licence in text
    assert f"full set in {roots['system'] / 'fashion-mnist'}" in text
    assert "mnist: " in text and "not found" in text
