"""Tests for keras_luar.data: client partitioners and the federated digits."""

from __future__ import annotations

import collections
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from keras_luar.data import (
    FederatedData,
    load_digits_federated,
    partition_dirichlet,
    partition_iid,
)


def fedml_lda_reference(y, client_num, alpha, min_require_size, seed):
    """FedML's LDA split, written out as in FedML, with a seeded Generator.

    Kept deliberately close to FedML's `non_iid_partition_with_dirichlet_distribution`
    (class loop, list comprehensions, `while min_size < ...`) and independent of
    the library's code. The only addition is the zero-sum guard, which spreads a
    class evenly over the clients below the cap. Returns the split, the number
    of draws made and how many times the guard fired.
    """
    rng = np.random.default_rng(seed)
    N = y.shape[0]
    guarded = 0
    draws = 0
    min_size = -1
    while min_size < min_require_size:
        draws += 1
        idx_batch = [[] for _ in range(client_num)]
        for k in np.unique(y):
            idx_k = np.where(y == k)[0]
            rng.shuffle(idx_k)
            proportions = rng.dirichlet(np.repeat(alpha, client_num))
            proportions = np.array(
                [
                    p * (len(idx_j) < N / client_num)
                    for p, idx_j in zip(proportions, idx_batch, strict=True)
                ]
            )
            if proportions.sum() == 0:
                guarded += 1
                proportions = np.array([float(len(idx_j) < N / client_num) for idx_j in idx_batch])
            proportions = proportions / proportions.sum()
            proportions = (np.cumsum(proportions) * len(idx_k)).astype(int)[:-1]
            idx_batch = [
                idx_j + idx.tolist()
                for idx_j, idx in zip(idx_batch, np.split(idx_k, proportions), strict=True)
            ]
        min_size = min([len(idx_j) for idx_j in idx_batch])
    return [sorted(idx_j) for idx_j in idx_batch], draws, guarded


def labels(num_classes: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


def assert_is_partition(parts: list[np.ndarray], n: int) -> None:
    flat = np.concatenate(parts)
    assert flat.size == n, "some index is missing or used twice"
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))
    for part in parts:
        assert np.all(np.diff(part) > 0), "indices within a client must be sorted and unique"


def mean_max_class_fraction(y: np.ndarray, parts: list[np.ndarray]) -> float:
    num_classes = int(y.max()) + 1
    return float(np.mean([np.bincount(y[p], minlength=num_classes).max() / len(p) for p in parts]))


# --- partition_dirichlet -------------------------------------------------------------------


@pytest.mark.parametrize("num_clients, alpha, min_size", [(10, 0.5, 10), (7, 0.1, 20), (1, 1.0, 5)])
def test_dirichlet_is_partition_with_min_size(num_clients, alpha, min_size):
    y = labels(10, 2000, seed=1)
    parts = partition_dirichlet(y, y, num_clients, alpha, min_size=min_size, seed=3)
    assert len(parts) == num_clients
    assert_is_partition(parts, len(y))
    assert min(len(p) for p in parts) >= min_size


def test_dirichlet_is_deterministic_per_seed():
    y = labels(10, 2000, seed=1)
    first = partition_dirichlet(y, y, 10, 0.5, seed=5)
    again = partition_dirichlet(y, y, 10, 0.5, seed=5)
    other = partition_dirichlet(y, y, 10, 0.5, seed=6)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_small_alpha_is_more_skewed_than_large_alpha():
    y = labels(10, 2000, seed=1)
    skewed = mean_max_class_fraction(y, partition_dirichlet(y, y, 10, 0.05, seed=0))
    uniform = mean_max_class_fraction(y, partition_dirichlet(y, y, 10, 100.0, seed=0))
    # With alpha=100 each client's label mix is close to the global one (max
    # class fraction near 0.1); with alpha=0.05 a client is mostly one class.
    assert uniform < 0.25
    assert skewed > 0.5


@pytest.mark.parametrize(
    "num_classes, n, num_clients, alpha, min_size, seed, redraws, guarded",
    [
        (10, 2000, 10, 0.5, 10, 0, False, False),
        (7, 901, 13, 0.2, 30, 4, True, False),
        # alpha=1e-3: Dirichlet weights underflow to exactly 0.
        (20, 2000, 10, 1e-3, 0, 1, False, True),
    ],
)
def test_dirichlet_matches_fedml_reference(
    num_classes, n, num_clients, alpha, min_size, seed, redraws, guarded
):
    y = labels(num_classes, n, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 would warn before producing garbage
        parts = partition_dirichlet(y, y, num_clients, alpha, min_size=min_size, seed=seed)
    expected, draws, guard_count = fedml_lda_reference(y, num_clients, alpha, min_size, seed)
    # Each case must exercise what it is there for.
    assert (draws > 1) == redraws
    assert (guard_count > 0) == guarded
    assert [p.tolist() for p in parts] == expected
    assert_is_partition(parts, n)


def test_full_clients_get_no_more_samples():
    # A client stops receiving classes once it holds >= n / num_clients samples,
    # so it ends below that cap plus one class; float rounding in the cuts may
    # hand a closed last client one stray sample per class. Without the rule,
    # alpha=0.01 lets one client collect several whole classes (>= 378 here).
    y = np.repeat(np.arange(20), 100)
    num_clients = 10
    bound = len(y) / num_clients + 100 + 20
    for seed in range(3):
        parts = partition_dirichlet(y, y, num_clients, 0.01, min_size=0, seed=seed)
        assert_is_partition(parts, len(y))
        assert max(len(p) for p in parts) < bound


def test_dirichlet_accepts_labels_that_are_not_0_to_k():
    y = np.array([3, 7, 7, 42] * 50, dtype=np.int16)
    parts = partition_dirichlet(np.zeros((200, 2)), y, 4, 1.0, min_size=5)
    assert_is_partition(parts, 200)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"alpha": 0.0},
            "Invalid value for argument `alpha`. Expected a finite float > 0. Received: alpha=0.0",
        ),
        ({"alpha": -1}, "Received: alpha=-1"),
        ({"alpha": float("nan")}, "Received: alpha=nan"),
        ({"alpha": float("inf")}, "Received: alpha=inf"),
        (
            {"num_clients": 0},
            "Invalid value for argument `num_clients`. Expected an int >= 1. "
            "Received: num_clients=0",
        ),
        ({"num_clients": True}, "Received: num_clients=True"),
        ({"num_clients": 2.0}, "Received: num_clients=2.0"),
        ({"min_size": -1}, "argument `min_size`. Expected an int >= 0"),
        ({"seed": -3}, "argument `seed`"),
        ({"max_attempts": 0}, "argument `max_attempts`"),
        ({"num_clients": 11, "min_size": 10}, "impossible to give 11 clients 10 samples each"),
    ],
)
def test_dirichlet_rejects_invalid_arguments(kwargs, message):
    y = np.repeat(np.arange(10), 10)
    args = {"num_clients": 4, "alpha": 0.5, "min_size": 1} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        partition_dirichlet(y, y, **args)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (
            np.zeros(5),
            np.zeros(4, dtype=int),
            "Expected as many labels as rows of `x` (5). Received: len(y)=4",
        ),
        (np.zeros(4), np.zeros((4, 1), dtype=int), "Received: y with shape (4, 1)"),
        (
            np.zeros(4),
            np.zeros(4),
            "integer class labels. Received: y with shape (4,) and dtype float64",
        ),
        (np.zeros(0), np.zeros(0, dtype=int), "non-empty"),
    ],
)
def test_dirichlet_rejects_invalid_data(x, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        partition_dirichlet(x, y, 1, 0.5, min_size=0)


def test_dirichlet_gives_up_after_max_attempts():
    # Feasible (10 clients x 20 = 200 samples) but only an exactly even split
    # works, which alpha=0.01 practically never draws.
    y = np.repeat(np.arange(10), 20)
    with pytest.raises(ValueError, match=r"num_clients=10.*min_size=20.*max_attempts=5"):
        partition_dirichlet(y, y, 10, 0.01, min_size=20, max_attempts=5)


# --- partition_iid ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, num_clients", [(100, 7), (10, 10), (5, 1)])
def test_iid_sizes_and_coverage(n, num_clients):
    y = np.arange(n)
    parts = partition_iid(y, y, num_clients, seed=2)
    assert len(parts) == num_clients
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert_is_partition(parts, n)


def test_iid_is_deterministic_per_seed():
    y = np.arange(100)
    first, again = partition_iid(y, y, 4, seed=1), partition_iid(y, y, 4, seed=1)
    other = partition_iid(y, y, 4, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    "num_clients, message", [(0, "num_clients=0"), (11, "an int <= the number of samples (10)")]
)
def test_iid_rejects_invalid_num_clients(num_clients, message):
    y = np.arange(10)
    with pytest.raises(ValueError, match=re.escape(message)):
        partition_iid(y, y, num_clients)


# --- load_digits_federated -------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> FederatedData:
    return load_digits_federated(num_clients=8, alpha=0.3, seed=1, min_size=10)


def test_digits_clients_and_shapes(digits):
    assert digits.client_ids == [f"client_{i:03d}" for i in range(8)]
    assert list(digits.client_arrays) == digits.client_ids
    assert digits.num_classes == 10
    assert digits.input_shape == (8, 8, 1)
    spec = digits.client_data["client_000"].element_spec
    assert spec == (
        tf.TensorSpec(shape=(8, 8, 1), dtype=tf.float32),
        tf.TensorSpec(shape=(), dtype=tf.int32),
    )
    for x, y in digits.client_arrays.values():
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert len(y) >= 10


def test_digits_dataset_matches_arrays(digits):
    x, y = digits.client_arrays["client_003"]
    elements = list(digits.client_data["client_003"].as_numpy_iterator())
    assert len(elements) == len(y)
    np.testing.assert_array_equal(np.stack([e[0] for e in elements]), x)
    np.testing.assert_array_equal(np.array([e[1] for e in elements]), y)


def test_digits_pixels_are_scaled_to_unit_interval(digits):
    x = np.concatenate([x for x, _ in digits.client_arrays.values()] + [digits.test_data[0]])
    assert x.min() == 0.0 and x.max() == 1.0
    # Raw pixels are integers 0..16, so x * 16 must be whole.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_digits_clients_and_test_set_cover_every_sample_once(digits):
    raw = load_digits()

    def rows(x, y):
        pixels = np.rint(np.asarray(x).reshape(len(y), -1) * 16).astype(int)
        return collections.Counter(
            zip(map(bytes, pixels.astype(np.uint8)), y.tolist(), strict=True)
        )

    pieces = list(digits.client_arrays.values()) + [digits.test_data]
    combined = sum((rows(x, y) for x, y in pieces), collections.Counter())
    assert combined == rows(raw.images / 16, raw.target)
    assert sum(len(y) for _, y in pieces) == len(raw.target)


def test_digits_test_set_is_stratified(digits):
    all_counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(digits.test_data[1], minlength=10)
    assert np.all(test_counts > 0)
    assert np.all(np.abs(test_counts - 0.25 * all_counts) <= 1)


def test_digits_test_dataset_batches(digits):
    batches = list(digits.test_dataset(batch_size=100))
    assert [int(b[0].shape[0]) for b in batches[:-1]] == [100] * (len(batches) - 1)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), digits.test_data[1])
    with pytest.raises(ValueError, match="argument `batch_size`"):
        digits.test_dataset(batch_size=0)


def test_digits_is_deterministic_per_seed(digits):
    again = load_digits_federated(num_clients=8, alpha=0.3, seed=1, min_size=10)
    other = load_digits_federated(num_clients=8, alpha=0.3, seed=2, min_size=10)
    for cid in digits.client_ids:
        np.testing.assert_array_equal(digits.client_arrays[cid][0], again.client_arrays[cid][0])
        np.testing.assert_array_equal(digits.client_arrays[cid][1], again.client_arrays[cid][1])
    assert any(
        not np.array_equal(digits.client_arrays[cid][1], other.client_arrays[cid][1])
        for cid in digits.client_ids
    )


def test_digits_iid_split():
    data = load_digits_federated(num_clients=5, iid=True, test_fraction=0.2)
    sizes = [len(y) for _, y in data.client_arrays.values()]
    assert len(sizes) == 5
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) + len(data.test_data[1]) == 1797


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_fraction": 0.0}, "Expected a float in (0, 1). Received: test_fraction=0.0"),
        ({"test_fraction": 1}, "Received: test_fraction=1"),
        ({"test_fraction": 0.001}, "at least 10 of the 1797 samples on each side"),
        ({"alpha": 0}, "Received: alpha=0"),
        ({"num_clients": 0}, "Received: num_clients=0"),
        ({"num_clients": 200}, "impossible to give 200 clients 10 samples each"),
    ],
)
def test_digits_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_digits_federated(**kwargs)
