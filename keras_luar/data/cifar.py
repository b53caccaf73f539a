"""CIFAR-10 and CIFAR-100, split across clients with the paper's Dirichlet partition.

`load_cifar_federated` reads the "python version" archives of the University of Toronto
(https://www.cs.toronto.edu/~kriz/cifar.html), extracted in the cache directory
`keras_luar.data.cache.data_root`:

* ``cifar-10-batches-py/data_batch_1`` ... ``data_batch_5`` and ``test_batch``;
* ``cifar-100-python/train`` and ``test``.

Each file is a pickled dict with byte-string keys. ``b"data"`` is a uint8 array
of shape ``[N, 3072]`` whose rows hold the red plane, then the green plane, then
the blue plane, each 32x32 in row-major order; the labels are ``b"labels"``
(CIFAR-10) or ``b"fine_labels"`` (CIFAR-100, 100 classes; the 20 coarse
classes are not used). The files are read with `pickle`, so only load archives
from the official site or copies of them.

When the extracted directory is missing, the archive (``cifar-10-python.tar.gz``
or ``cifar-100-python.tar.gz``) is taken from the cache directory, or else
downloaded, and extracted there.

Preprocessing follows the official FedLUAR code (``feeders/feeder_cifar.py``):
pixels are scaled to [0, 1] and then standardized with the mean and standard
deviation of every pixel position and channel over the whole training split
(arrays of shape ``(32, 32, 3)``), for the training and the test images alike.
The official code also augments every training image at each step (zero
padding of 4 pixels, a random 32x32 crop and a random horizontal flip); these
loaders do not, since a fixed per-client dataset cannot draw fresh crops in
every round reproducibly.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import pickle
import shutil
import tarfile
import tempfile

import numpy as np

from keras_luar.data.cache import DataFiles, damaged_file_error, data_root, download_file
from keras_luar.data.federated import FederatedData, _concatenate_pairs
from keras_luar.data.partition import (
    _check_alpha,
    _check_bool,
    _check_int,
    _invalid,
    partition_dirichlet,
)

# Bounds every connect and read of a download, so that an offline machine
# fails in seconds instead of hanging.
DOWNLOAD_TIMEOUT_S = 10.0
IMAGE_SHAPE = (32, 32, 3)


@dataclasses.dataclass(frozen=True)
class _CifarSpec:
    name: str
    url: str
    md5: str  # of the archive, as published on the Toronto page
    directory: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    num_classes: int

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file)


CIFAR10 = _CifarSpec(
    name="CIFAR-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    directory="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    label_key=b"labels",
    num_classes=10,
)
CIFAR100 = _CifarSpec(
    name="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    directory="cifar-100-python",
    train_files=("train",),
    test_file="test",
    label_key=b"fine_labels",
    num_classes=100,
)


CIFAR = {"cifar10": CIFAR10, "cifar100": CIFAR100}


def _download(url: str, path: pathlib.Path, md5: str) -> None:
    """Downloads `url` to `path` and checks its MD5 (see `download_file`)."""
    download_file(url, path, md5, timeout=DOWNLOAD_TIMEOUT_S)


def _extract(archive: pathlib.Path, root: pathlib.Path, spec: _CifarSpec) -> None:
    """Extracts the data set's files from `archive` into ``root / spec.directory``."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # The "data" filter refuses absolute paths, links out of the
            # target and device files.
            tar.extractall(scratch, filter="data")
        absent = [n for n in spec.files if not (scratch / spec.directory / n).is_file()]
        if absent:
            raise OSError(f"the archive lacks {', '.join(f'{spec.directory}/{n}' for n in absent)}")
        # File by file, so that other files a user keeps in the directory stay;
        # the archive's extra files (batches.meta, meta, ...) come along.
        target = root / spec.directory
        target.mkdir(exist_ok=True)
        for path in (scratch / spec.directory).iterdir():
            if path.is_file():
                os.replace(path, target / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cifar_directory(spec: _CifarSpec, root: pathlib.Path, *, download: bool) -> pathlib.Path:
    """Returns the extracted directory in `root`, extracting or downloading it if needed."""
    archive = root / spec.archive
    files = DataFiles(
        spec.name,
        root,
        [f"{spec.directory}/{name}" for name in spec.files],
        f"Either put the archive {archive} there (it is extracted on first use), or "
        f"download and extract it yourself: `mkdir -p {root} && curl -fL {spec.url} | "
        f"tar -xz -C {root}`; or call this loader with download=True where the network "
        "is reachable.",
    )
    if files.present():
        return root / spec.directory
    if not archive.is_file():
        files.fetch(spec.url, lambda: _download(spec.url, archive, spec.md5), download=download)
    try:
        _extract(archive, root, spec)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise files.missing(
            f"{archive} could not be extracted ({type(exc).__name__}: {exc}); delete it "
            "to download it again"
        ) from exc
    return root / spec.directory


def _read_batch(spec: _CifarSpec, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one pickled batch into uint8 images ``[N, 32, 32, 3]`` and int32 labels."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[spec.label_key])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"data of shape {data.shape} and dtype {data.dtype}")
        if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{len(labels)} labels of dtype {labels.dtype} for {len(data)} rows")
        if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
            raise ValueError(f"labels outside [0, {spec.num_classes})")
    except Exception as exc:  # any damage means the cache must be refreshed
        raise damaged_file_error(
            spec.name,
            path,
            f"{path.name} is there but is not a {spec.name} python-version batch: "
            f"{type(exc).__name__}: {exc}",
            f"Delete {path.parent} and load again to extract or download it afresh.",
            root=path.parent.parent,
        ) from exc
    # Rows are channel-major (R, G, B planes); models take height, width, channel.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int32)


def _read_split(spec: _CifarSpec, directory: pathlib.Path, names) -> tuple[np.ndarray, np.ndarray]:
    return _concatenate_pairs([_read_batch(spec, directory / name) for name in names])


def _scale(images: np.ndarray) -> np.ndarray:
    scaled = images.astype(np.float32)
    scaled /= 255.0
    return scaled


def _pixel_statistics(x: np.ndarray, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every pixel position and channel, as float32.

    The official feeder standardizes with these statistics of the training
    split. They are accumulated in float64 over chunks of images, which is
    exact enough and never holds a float64 copy of the whole split.
    """
    n = len(x)
    mean = sum(x[i : i + chunk].sum(axis=0, dtype=np.float64) for i in range(0, n, chunk)) / n
    var = sum(((x[i : i + chunk] - mean) ** 2).sum(axis=0) for i in range(0, n, chunk)) / n
    std = np.sqrt(var)
    # A constant pixel (never in the real data) would divide by zero.
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def load_cifar_federated(
    dataset: str,
    num_clients: int = 128,
    alpha: float = 0.1,
    seed: int = 0,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    min_size: int = 10,
    normalize: bool = True,
) -> FederatedData:
    """Loads CIFAR-10 or CIFAR-100 and splits its training images across clients.

    `load_cifar10_federated` and `load_cifar100_federated` are this function
    with `dataset` given.

    The 50,000 training images are partitioned with `partition_dirichlet`
    into clients ``"client_000"``, ...; the 10,000 test images form
    ``test_data``. x is float32 of shape ``(32, 32, 3)``, standardized as the
    module docstring describes; y is the int32 class: 0-9 for CIFAR-10, the
    fine class 0-99 for CIFAR-100. No augmentation is applied (the official
    code pads, crops and flips; see the module docstring).

    Args:
      dataset: ``"cifar10"`` or ``"cifar100"``.
      num_clients: Number of clients, >= 1 (the paper uses 128).
      alpha: Dirichlet concentration of the label split, > 0 (the paper uses 0.1).
      seed: Seed of the client partition.
      data_dir: Cache directory; see `keras_luar.data.cache.data_root`.
      download: Whether to download the archive (``cifar-10-python.tar.gz``
        or ``cifar-100-python.tar.gz``, with a `DOWNLOAD_TIMEOUT_S` timeout)
        when neither the extracted directory nor the archive is in the cache
        directory.
      min_size: Smallest number of training images per client; see
        `partition_dirichlet`.
      normalize: Standardize with the training split's per-pixel mean and
        standard deviation (the official preprocessing); if False, x is only
        scaled to [0, 1].

    Returns:
      A `FederatedData` with `num_clients` clients and 10 or 100 classes.

    Raises:
      ValueError: If an argument is invalid, checked before any file is read,
        or if the partition fails (see `partition_dirichlet`).
      TypeError: If `data_dir` is not a path.
      MissingDataError: If the files are neither in the cache directory nor
        downloadable, or are damaged.

    Examples:
      >>> from keras_luar.data.cache import MissingDataError
      >>> for load in (load_cifar10_federated, load_cifar100_federated):
      ...     try:
      ...         load(4, data_dir="/nonexistent/data", download=False)
      ...     except MissingDataError as err:
      ...         print(str(err).split(". Expected")[0])
      CIFAR-10 is not in the data cache and could not be downloaded (download=False)
      CIFAR-100 is not in the data cache and could not be downloaded (download=False)

    References:
      Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
    """
    if not isinstance(dataset, str) or dataset not in CIFAR:
        raise _invalid("dataset", f"one of {sorted(CIFAR)}", f"dataset={dataset!r}")
    spec = CIFAR[dataset]
    num_clients = _check_int("num_clients", num_clients, 1)
    alpha = _check_alpha(alpha)
    seed = _check_int("seed", seed, 0)
    min_size = _check_int("min_size", min_size, 0)
    download = _check_bool("download", download)
    normalize = _check_bool("normalize", normalize)
    root = data_root(data_dir)

    directory = _cifar_directory(spec, root, download=download)
    x_train, y_train = _read_split(spec, directory, spec.train_files)
    x_test, y_test = _read_split(spec, directory, [spec.test_file])

    x_train = _scale(x_train)
    x_test = _scale(x_test)
    if normalize:
        mean, std = _pixel_statistics(x_train)
        # In place: the real training split is 600 MB as float32.
        x_train -= mean
        x_train /= std
        x_test -= mean
        x_test /= std

    parts = partition_dirichlet(x_train, y_train, num_clients, alpha, min_size=min_size, seed=seed)
    return FederatedData.from_partition(
        x_train, y_train, parts, (x_test, y_test), spec.num_classes, IMAGE_SHAPE
    )


load_cifar10_federated = functools.partial(load_cifar_federated, "cifar10")
"""CIFAR-10 (10 classes): `load_cifar_federated` with ``dataset="cifar10"``."""

load_cifar100_federated = functools.partial(load_cifar_federated, "cifar100")
"""CIFAR-100 (100 fine classes): `load_cifar_federated` with ``dataset="cifar100"``."""
