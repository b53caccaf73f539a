"""CIFAR-10/100 loaders on tiny files written in the Toronto "python version" format."""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import tarfile

import numpy as np
import pytest

from keras_luar.data import cifar
from keras_luar.data.cache import MissingDataError
from keras_luar.data.partition import partition_dirichlet

TRAIN_PER_BATCH = 12
NUM_TRAIN = 5 * TRAIN_PER_BATCH  # CIFAR-10 has five training batches
NUM_TEST = 10
# The known pixel: test image 0 at row 1, column 2 has (R, G, B) = (200, 100, 50).
KNOWN_ROW, KNOWN_COL, KNOWN_RGB = 1, 2, (200, 100, 50)
# Kept before the autouse fixture stubs it, to test it on file:// URLs.
REAL_DOWNLOAD = cifar._download
LOADERS = {"cifar10": cifar.load_cifar10_federated, "cifar100": cifar.load_cifar100_federated}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may download: a download that is not stubbed by the test fails."""

    def refuse(url, path, md5):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(cifar, "_download", refuse)


def _rows(rng, n, first_id):
    """Random uint8 rows; byte 0 (red at pixel (0, 0)) holds the sample's id."""
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[:, 0] = np.arange(first_id, first_id + n)
    return rows


def _hwc(rows):
    """Channel-major rows to [N, 32, 32, 3] by explicit index arithmetic."""
    h = np.arange(32)[:, None, None]
    w = np.arange(32)[None, :, None]
    c = np.arange(3)[None, None, :]
    return rows[:, c * 1024 + h * 32 + w]


def _dump(path, obj):
    # Protocol 2, bytes keys, as the published files (written by Python 2's cPickle).
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(root: pathlib.Path, name: str, seed: int = 0) -> dict:
    """Writes a tiny CIFAR-10 or CIFAR-100 in the real layout; returns the raw truth."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    train_rows = _rows(rng, NUM_TRAIN, 0)
    # Every CIFAR-10 class, or a spread of CIFAR-100 classes, occurs.
    train_labels = (np.arange(NUM_TRAIN) * 7) % num_classes
    test_rows = _rows(rng, NUM_TEST, 100)
    pixel = KNOWN_ROW * 32 + KNOWN_COL
    test_rows[0, [pixel, 1024 + pixel, 2048 + pixel]] = KNOWN_RGB
    test_labels = (np.arange(NUM_TEST) * 3) % num_classes
    if name == "cifar10":
        directory = root / "cifar-10-batches-py"
        directory.mkdir(parents=True)
        for b in range(5):
            part = slice(b * TRAIN_PER_BATCH, (b + 1) * TRAIN_PER_BATCH)
            _dump(
                directory / f"data_batch_{b + 1}",
                {
                    b"batch_label": f"training batch {b + 1} of 5".encode(),
                    b"labels": train_labels[part].tolist(),
                    b"data": train_rows[part],
                    b"filenames": [b"x.png"] * TRAIN_PER_BATCH,
                },
            )
        _dump(
            directory / "test_batch",
            {b"labels": test_labels.tolist(), b"data": test_rows, b"filenames": []},
        )
    else:
        directory = root / "cifar-100-python"
        directory.mkdir(parents=True)
        # Coarse labels differ from fine ones, so reading the wrong key shows.
        for split, rows, labels in (
            ("train", train_rows, train_labels),
            ("test", test_rows, test_labels),
        ):
            _dump(
                directory / split,
                {
                    b"fine_labels": labels.tolist(),
                    b"coarse_labels": ((labels + 1) % 20).tolist(),
                    b"data": rows,
                    b"filenames": [],
                },
            )
    return {
        "directory": directory,
        "x_train": _hwc(train_rows),
        "y_train": train_labels,
        "x_test": _hwc(test_rows),
        "y_test": test_labels,
        "num_classes": num_classes,
    }


def write_archive(root: pathlib.Path, name: str) -> tuple[pathlib.Path, dict]:
    """Writes the tiny data set as the published .tar.gz in `root`, nothing else."""
    staging = root / "staging"
    truth = write_cifar(staging, name)
    archive = root / ("cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(truth["directory"], arcname=truth["directory"].name)
    return archive, truth


def load(name, data_dir, **kwargs):
    kwargs = {"num_clients": 3, "alpha": 0.5, "min_size": 5, "download": False, **kwargs}
    return LOADERS[name](data_dir=data_dir, **kwargs)


def sample_ids(data) -> dict[str, np.ndarray]:
    """Each client's sample ids, read back from byte 0 of an unnormalized load."""
    return {
        cid: np.rint(x[:, 0, 0, 0] * 255).astype(int) for cid, (x, _) in data.client_arrays.items()
    }


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_arrays_labels_and_every_sample_once(tmp_path, name):
    truth = write_cifar(tmp_path, name)
    data = load(name, tmp_path, normalize=False)

    assert data.client_ids == ["client_000", "client_001", "client_002"]
    assert data.num_classes == truth["num_classes"]
    assert data.input_shape == (32, 32, 3)
    ids = sample_ids(data)
    assert sorted(np.concatenate(list(ids.values())).tolist()) == list(range(NUM_TRAIN))
    for cid, (x, y) in data.client_arrays.items():
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape == (len(ids[cid]), 32, 32, 3) and len(x) >= 5
        np.testing.assert_array_equal(y, truth["y_train"][ids[cid]])
        np.testing.assert_allclose(x, truth["x_train"][ids[cid]] / 255.0, rtol=1e-6)
    x_test, y_test = data.test_data
    assert x_test.dtype == np.float32 and y_test.dtype == np.int32
    np.testing.assert_array_equal(y_test, truth["y_test"])
    np.testing.assert_allclose(x_test, truth["x_test"] / 255.0, rtol=1e-6)
    # Channel-major rows become height, width, channel.
    np.testing.assert_allclose(
        x_test[0, KNOWN_ROW, KNOWN_COL], np.array(KNOWN_RGB) / 255.0, rtol=1e-6
    )

    # The datasets hold what the arrays hold.
    cid = data.client_ids[1]
    elements = list(data.client_data[cid].as_numpy_iterator())
    np.testing.assert_array_equal(np.stack([e[0] for e in elements]), data.client_arrays[cid][0])
    np.testing.assert_array_equal(np.array([e[1] for e in elements]), data.client_arrays[cid][1])


def test_split_is_the_papers_dirichlet_split_and_follows_the_seed(tmp_path):
    truth = write_cifar(tmp_path, "cifar10")
    ids = {
        seed: sample_ids(load("cifar10", tmp_path, seed=seed, normalize=False)) for seed in (0, 1)
    }

    expected = partition_dirichlet(
        np.zeros(NUM_TRAIN), truth["y_train"], 3, 0.5, min_size=5, seed=0
    )
    for got, want in zip(ids[0].values(), expected, strict=True):
        np.testing.assert_array_equal(np.sort(got), want)
    again = sample_ids(load("cifar10", tmp_path, seed=0, normalize=False))
    assert all(np.array_equal(again[c], ids[0][c]) for c in again)
    assert any(not np.array_equal(np.sort(ids[1][c]), np.sort(ids[0][c])) for c in ids[0])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_normalization_uses_training_pixel_statistics(tmp_path, name):
    truth = write_cifar(tmp_path, name)
    ids = sample_ids(load(name, tmp_path, normalize=False))
    data = load(name, tmp_path)  # normalize=True is the default

    train = truth["x_train"].astype(np.float64) / 255.0
    mean, std = train.mean(axis=0), train.std(axis=0)
    assert mean.shape == std.shape == (32, 32, 3)
    for cid, (x, _) in data.client_arrays.items():
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, (train[ids[cid]] - mean) / std, atol=2e-5)
    x_test = data.test_data[0]
    assert x_test.dtype == np.float32
    np.testing.assert_allclose(x_test, (truth["x_test"] / 255.0 - mean) / std, atol=2e-5)
    # Standardized training pixels: mean 0, standard deviation 1 at every position.
    pooled = np.concatenate([x for x, _ in data.client_arrays.values()]).astype(np.float64)
    np.testing.assert_allclose(pooled.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pooled.std(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_in_the_cache_is_extracted(tmp_path, name):
    archive, truth = write_archive(tmp_path / "cache", name)
    reference = load(name, tmp_path / "cache" / "staging", normalize=False)
    data = load(name, tmp_path / "cache", normalize=False)

    assert archive.is_file()
    extracted = tmp_path / "cache" / truth["directory"].name
    assert sorted(p.name for p in extracted.iterdir()) == sorted(
        p.name for p in truth["directory"].iterdir()
    )
    for cid in reference.client_ids:
        np.testing.assert_array_equal(data.client_arrays[cid][0], reference.client_arrays[cid][0])
        np.testing.assert_array_equal(data.client_arrays[cid][1], reference.client_arrays[cid][1])
    np.testing.assert_array_equal(data.test_data[0], reference.test_data[0])
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_download_is_stored_then_extracted(tmp_path, monkeypatch):
    archive, _ = write_archive(tmp_path / "source", "cifar10")
    calls = []

    def fake_download(url, path, md5):
        calls.append((url, path, md5))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(archive.read_bytes())

    monkeypatch.setattr(cifar, "_download", fake_download)
    cache = tmp_path / "cache"
    data = load("cifar10", cache, download=True, normalize=False)

    assert calls == [(cifar.CIFAR10.url, cache / "cifar-10-python.tar.gz", cifar.CIFAR10.md5)]
    assert sorted(np.concatenate(list(sample_ids(data).values())).tolist()) == list(
        range(NUM_TRAIN)
    )
    load("cifar10", cache, download=True)  # now cached: no second download
    assert len(calls) == 1


def test_download_checks_md5_and_leaves_no_partial_file(tmp_path):
    # The real function on file:// URLs: no network involved.
    source = tmp_path / "source.bin"
    source.write_bytes(b"tiny archive stand-in")
    good = hashlib.md5(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "a.tar.gz"
    with pytest.raises(OSError, match="MD5"):
        REAL_DOWNLOAD(source.as_uri(), target, "0" * 32)
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []
    REAL_DOWNLOAD(source.as_uri(), target, good)
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_data_without_download(tmp_path, name):
    spec = cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100
    with pytest.raises(MissingDataError) as info:
        load(name, tmp_path / "empty")
    message = str(info.value)
    assert f"{spec.name} is not in the data cache" in message and "download=False" in message
    for filename in spec.files:
        assert str(tmp_path / "empty" / spec.directory / filename) in message
    assert str(tmp_path / "empty" / spec.archive) in message
    assert spec.url in message and "curl" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_failed_download_raises_missing_data_with_the_reason(tmp_path, monkeypatch, name):
    spec = cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100

    def offline(url, path, md5):
        raise OSError("network is unreachable")

    monkeypatch.setattr(cifar, "_download", offline)
    with pytest.raises(MissingDataError) as info:
        load(name, tmp_path, download=True)
    message = str(info.value)
    assert f"downloading {spec.url} failed: OSError: network is unreachable" in message
    assert str(tmp_path / spec.directory / spec.test_file) in message
    assert isinstance(info.value.__cause__, OSError)


def test_damaged_archive_or_batch_raises_missing_data(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a gzip file")
    with pytest.raises(MissingDataError, match="could not be extracted"):
        load("cifar10", tmp_path)

    write_cifar(tmp_path / "other", "cifar100")
    (tmp_path / "other" / "cifar-100-python" / "test").write_bytes(b"garbage")
    with pytest.raises(MissingDataError, match="test is there but is not a CIFAR-100"):
        load("cifar100", tmp_path / "other")


def test_keras_luar_data_environment_variable(tmp_path, monkeypatch):
    write_cifar(tmp_path / "env", "cifar10")
    monkeypatch.setenv("KERAS_LUAR_DATA", str(tmp_path / "env"))
    data = cifar.load_cifar10_federated(3, 0.5, min_size=5, download=False)
    assert len(data.client_ids) == 3

    monkeypatch.setenv("KERAS_LUAR_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(MissingDataError, match=str(tmp_path / "elsewhere")):
        cifar.load_cifar10_federated(3, 0.5, min_size=5, download=False)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 2.0}, "num_clients"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"seed": -1}, "seed"),
        ({"min_size": -1}, "min_size"),
        ({"download": "yes"}, "download"),
        ({"normalize": None}, "normalize"),
    ],
)
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_bad_arguments_raise_before_any_file_is_read(tmp_path, monkeypatch, name, kwargs, argument):
    write_cifar(tmp_path, name)

    def no_reading(*args, **kwargs):
        raise AssertionError("a file was looked at before the arguments were checked")

    monkeypatch.setattr(cifar, "_cifar_directory", no_reading)
    monkeypatch.setattr(cifar, "_read_batch", no_reading)
    with pytest.raises(ValueError, match=f"Invalid value for argument `{argument}`"):
        load(name, tmp_path, **kwargs)


def test_bad_data_dir_type_raises_type_error():
    with pytest.raises(TypeError, match="data_dir"):
        cifar.load_cifar10_federated(3, data_dir=3)


def test_one_loader_for_both_data_sets(tmp_path):
    write_cifar(tmp_path, "cifar100")
    kwargs = {"num_clients": 3, "alpha": 0.5, "min_size": 5, "download": False}
    direct = cifar.load_cifar_federated("cifar100", data_dir=tmp_path, **kwargs)
    alias = cifar.load_cifar100_federated(data_dir=tmp_path, **kwargs)
    assert direct.num_classes == alias.num_classes == 100
    for cid in alias.client_ids:
        np.testing.assert_array_equal(direct.client_arrays[cid][0], alias.client_arrays[cid][0])
    with pytest.raises(ValueError, match=r"argument `dataset`.*dataset='cifar1000'"):
        cifar.load_cifar_federated("cifar1000", data_dir=tmp_path, **kwargs)
