"""Federated EMNIST (FEMNIST), split by writer, through TFF's simulation data set.

The data come from `tff.simulation.datasets.emnist.load_data`, which reads one
SQLite file, ``emnist_all.sqlite``, from its cache directory; here that
directory is `keras_luar.data.cache.data_root`. TFF derived the file from
LEAF's FEMNIST: every writer's examples are split into a train and a test part,
so each writer appears in both splits.

Pixels are kept as TFF stores them: float32 in [0, 1] with the white background
at 1.0 and the ink near 0.0. LEAF's JSON files, which the official FedLUAR code
reads, hold the same values (grey levels divided by 255, not inverted), and the
paper's CNN takes them without normalization, so no transformation is applied.

The helpers below for TFF's SQLite files (download, splits, clients, the draw of
clients) are shared with `keras_luar.data.shakespeare`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import sqlite3
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._tff_internals import download as tff_download
from keras_luar._tff_internals import sql_client_data
from keras_luar.data.cache import DataFiles, damaged_file_error, data_root
from keras_luar.data.federated import FederatedData, _concatenate_pairs
from keras_luar.data.partition import _check_bool, _check_int, _invalid

FEMNIST_URL = "https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma"
# TFF's downloader calls urlopen without a timeout, so a stalled connection would
# block forever; this bounds every connect and read while it runs.
DOWNLOAD_TIMEOUT_S = 30.0


def _tff_database(dataset: str, url: str, root: pathlib.Path, *, download: bool) -> pathlib.Path:
    """Returns the path of TFF's SQLite file in `root`, downloading it if allowed.

    TFF caches ``<root>/<name>.sqlite`` for the origin ``.../<name>.sqlite.lzma``
    and trusts any file of that name. Its downloader writes straight into that
    name, so an interrupted download would later pass for a complete file; the
    download therefore goes to a scratch directory and is moved in at the end.
    """
    archive = tff_download.url_basename(url)
    filename = archive.removesuffix(".lzma")
    path = root / filename
    files = DataFiles(
        dataset,
        root,
        [filename],
        f"Download {url} and decompress it into that directory (`unlzma {archive}` or "
        f"`xz -d {archive}`), copy {filename} from TFF's own cache (~/.tff) if TFF "
        "already fetched it, or call this loader with download=True where the network "
        "is reachable.",
    )
    if not files.present():
        files.fetch(url, lambda: _fetch_tff_database(url, path), download=download)
    return path


def _fetch_tff_database(url: str, path: pathlib.Path) -> None:
    """Downloads and decompresses `url` with TFF's downloader, into `path` once complete."""
    previous_timeout = socket.getdefaulttimeout()
    scratch = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".download-", dir=path.parent)
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        fetched = tff_download.get_compressed_file(origin=url, cache_dir=scratch)
        os.replace(fetched, path)
    finally:
        socket.setdefaulttimeout(previous_timeout)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _load_tff_splits(dataset: str, path: pathlib.Path, load_fn):
    """Calls TFF's `load_data`, turning a damaged cache file into a clear error."""
    try:
        return load_fn(cache_dir=str(path.parent))
    except (sqlite3.DatabaseError, sql_client_data.DatabaseFormatError) as exc:
        raise damaged_file_error(
            dataset,
            path,
            f"{path.name} is there but is not TFF's SQLite database: {exc}",
            "Delete the file and load again to download it afresh.",
        ) from exc


def _read_client(client_data, client_id: str) -> dict[str, np.ndarray]:
    """Reads one client of a TFF `ClientData` into numpy arrays keyed by feature."""
    dataset = client_data.create_tf_dataset_for_client(client_id)
    batches = list(dataset.batch(4096).as_numpy_iterator())
    if not batches:
        spec = dataset.element_spec
        return {key: np.zeros([0, *s.shape], s.dtype.as_numpy_dtype) for key, s in spec.items()}
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _draw(ids: list[str], num_clients: int, seed: int, available: str) -> list[str]:
    """Draws `num_clients` of `ids` without replacement by `seed`, in the order of `ids`.

    Raises ValueError naming `num_clients` if there are fewer `ids`, which
    `available` describes (``"writers of the train split"``).
    """
    if num_clients > len(ids):
        raise _invalid(
            "num_clients", f"at most the {len(ids)} {available}", f"num_clients={num_clients}"
        )
    picked = np.random.default_rng(seed).choice(len(ids), size=num_clients, replace=False)
    return [ids[i] for i in sorted(picked)]


def _writer_arrays(client_data, writer: str) -> tuple[np.ndarray, np.ndarray]:
    if writer not in client_data.client_ids:
        return np.zeros([0, 28, 28, 1], np.float32), np.zeros([0], np.int32)
    features = _read_client(client_data, writer)
    x = features["pixels"].astype(np.float32)[..., np.newaxis]
    return x, features["label"].astype(np.int32)


def load_femnist_federated(
    num_clients: int = 128,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    writers_per_client: int = 1,
    only_digits: bool = False,
) -> FederatedData:
    """Loads federated EMNIST with clients formed from its writers.

    `num_clients` writers are drawn without replacement, by `seed`, from the
    writers of TFF's train split and sorted by id. With ``writers_per_client=1``
    (the default) every such writer is one client, named by its writer id
    (e.g. ``"f0000_14"``). With ``writers_per_client=k > 1`` client ``i``
    (``"client_000"``, ...) holds the examples of the sorted writers
    ``i, i+1, ..., i+k-1``, wrapping around at the end: the windows overlap, so
    each writer's examples appear in `k` clients. This is what the official
    FedLUAR code does for the paper's FEMNIST runs (128 clients of 10 writers,
    ``feeders/feeder_femnist.py``); the writer order is the one the same call
    with ``writers_per_client=1`` lists as client ids.

    The test set is the test split of the drawn writers, each writer once. As
    in the official code, it measures accuracy on the writers that take part;
    the test split of all 3,400 writers would be 77k examples, mostly of
    writers no client holds.

    x is float32 of shape ``(28, 28, 1)`` in [0, 1] with background 1.0 (see
    the module docstring); y is the int32 class: digits 0-9, upper case letters
    10-35, lower case letters 36-61.

    Args:
      num_clients: Number of clients and of writers drawn, >= 1.
      seed: Seed of the ``np.random.default_rng`` that draws the writers.
      data_dir: Cache directory; see `keras_luar.data.cache.data_root`.
      download: Whether to download ``emnist_all.sqlite`` (from
        `FEMNIST_URL`) when it is not in the cache directory.
      writers_per_client: Writers per client, 1 <= it <= `num_clients`.
      only_digits: Use TFF's digits-only splits (10 classes, 3,383 writers)
        instead of all 62 classes (3,400 writers).

    Returns:
      A `FederatedData` with `num_clients` clients and 62 (or 10) classes.

    Raises:
      ValueError: If an argument is invalid, checked before any file is
        read, or if the split has fewer writers than `num_clients`.
      TypeError: If `data_dir` is not a path.
      MissingDataError: When ``emnist_all.sqlite`` is missing from the data cache
        and `download` is off or fails, or when the file is damaged.

    Examples:
      Without the file and with `download` off, it stops before reading anything:

      >>> load_femnist_federated(4, data_dir="/nonexistent/data", download=False)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      keras_luar.data.cache.MissingDataError: FEMNIST is not in the data cache and could not be downloaded (download=False)...

    References:
      Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018.
    """
    num_clients = _check_int("num_clients", num_clients, 1)
    seed = _check_int("seed", seed, 0)
    writers_per_client = _check_int("writers_per_client", writers_per_client, 1)
    if writers_per_client > num_clients:
        raise _invalid(
            "writers_per_client",
            f"at most num_clients ({num_clients}), since the windows run over the "
            "num_clients drawn writers",
            f"writers_per_client={writers_per_client}",
        )
    download = _check_bool("download", download)
    only_digits = _check_bool("only_digits", only_digits)
    root = data_root(data_dir)

    path = _tff_database("FEMNIST", FEMNIST_URL, root, download=download)
    train, test = _load_tff_splits(
        "FEMNIST",
        path,
        lambda cache_dir: tff.simulation.datasets.emnist.load_data(
            only_digits=only_digits, cache_dir=cache_dir
        ),
    )
    chosen = _draw(sorted(train.client_ids), num_clients, seed, "writers of the train split")

    train_arrays = {w: _writer_arrays(train, w) for w in chosen}
    # One dataset per writer, shared by the windows that contain it, so that
    # overlapping clients do not copy the pixels into the graph k times.
    writer_datasets = {w: tf.data.Dataset.from_tensor_slices(a) for w, a in train_arrays.items()}
    width = max(3, len(str(num_clients - 1)))
    client_arrays, client_data = {}, {}
    for i in range(num_clients):
        window = [chosen[(i + j) % num_clients] for j in range(writers_per_client)]
        cid = chosen[i] if writers_per_client == 1 else f"client_{i:0{width}d}"
        client_arrays[cid] = _concatenate_pairs([train_arrays[w] for w in window])
        dataset = writer_datasets[window[0]]
        for w in window[1:]:
            dataset = dataset.concatenate(writer_datasets[w])
        client_data[cid] = dataset

    return FederatedData(
        client_data=client_data,
        client_arrays=client_arrays,
        test_data=_concatenate_pairs([_writer_arrays(test, w) for w in chosen]),
        num_classes=10 if only_digits else 62,
        input_shape=(28, 28, 1),
    )
