"""Splitting a centralized data set into per-client index sets.

`partition_dirichlet` is the label-skewed "LDA" split of FedML
(``non_iid_partition_with_dirichlet_distribution``), which the FedLUAR paper
(Kim, Kang and Lee, 2025) used for its non-IID experiments. It is reproduced
draw for draw, with two differences that do not change which samples go
where:

* randomness comes from ``np.random.default_rng(seed)`` instead of numpy's
  global state, so a split depends on its seed only;
* each client's indices are returned sorted instead of shuffled (shuffling is
  the input pipeline's job).

One case FedML leaves undefined is handled explicitly; see
`partition_dirichlet`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sized

import numpy as np


def _invalid(name: str, expected: str, received: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {received}"
    )


def _check_int(name: str, value: object, minimum: int) -> int:
    # bool is an Integral, but `num_clients=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _invalid(name, f"an int >= {minimum}", f"{name}={value!r}")
    return int(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid(name, "True or False", f"{name}={value!r}")
    return value


def _check_alpha(alpha: object) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, numbers.Real)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise _invalid("alpha", "a finite float > 0", f"alpha={alpha!r}")
    return float(alpha)


def _num_samples(x: Sized, y: Sized) -> int:
    if len(x) != len(y):
        raise _invalid("y", f"as many labels as rows of `x` ({len(x)})", f"len(y)={len(y)}")
    return len(y)


def _as_labels(y: object) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise _invalid(
            "y",
            "a non-empty 1-D array of integer class labels",
            f"y with shape {labels.shape} and dtype {labels.dtype}",
        )
    return labels


def partition_dirichlet(
    x: Sized,
    y: np.ndarray,
    num_clients: int,
    alpha: float,
    *,
    min_size: int = 10,
    seed: int = 0,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Splits a data set across clients with Dirichlet-distributed label proportions.

    For each class in sorted order, the class's samples are shuffled and cut
    into `num_clients` pieces with proportions drawn from
    ``Dirichlet(alpha, ..., alpha)``. A client that already holds at least
    ``len(y) / num_clients`` samples gets no share of later classes, which
    keeps client sizes from drifting far apart. The whole draw is repeated
    until every client has at least `min_size` samples.

    When the Dirichlet weights of every client still below that cap are
    exactly 0 (float underflow, common for ``alpha <= 0.01``), FedML divides
    by zero; here the class is then split evenly over those clients instead.

    Args:
      x: Features; only its length is used, to check it against `y`.
      y: 1-D integer class labels, one per row of `x`.
      num_clients: Number of clients, >= 1.
      alpha: Dirichlet concentration, > 0. Small values give each client few
        classes; large values approach an IID split.
      min_size: Smallest acceptable number of samples per client.
      seed: Seed of the ``np.random.default_rng`` that drives the split.
      max_attempts: How many draws to try before giving up on `min_size`.

    Returns:
      A list of `num_clients` int64 arrays of indices into `x` and `y`, each
      sorted ascending. Every index appears in exactly one array.

    Raises:
      ValueError: If an argument is invalid, if ``num_clients * min_size``
        exceeds the number of samples, or if no draw within `max_attempts`
        gives every client `min_size` samples.

    Examples:
      >>> import numpy as np
      >>> y = np.repeat(np.arange(4), 25)
      >>> parts = partition_dirichlet(np.zeros((100, 3)), y, num_clients=5, alpha=0.5, min_size=5)
      >>> len(parts)
      5
      >>> sorted(np.concatenate(parts).tolist()) == list(range(100))
      True
      >>> all(len(p) >= 5 for p in parts)
      True
    """
    num_clients = _check_int("num_clients", num_clients, 1)
    alpha = _check_alpha(alpha)
    min_size = _check_int("min_size", min_size, 0)
    seed = _check_int("seed", seed, 0)
    max_attempts = _check_int("max_attempts", max_attempts, 1)
    labels = _as_labels(y)
    n = _num_samples(x, labels)
    if num_clients * min_size > n:
        raise _invalid(
            "min_size",
            f"num_clients * min_size <= the number of samples ({n}); it is impossible "
            f"to give {num_clients} clients {min_size} samples each",
            f"min_size={min_size}, num_clients={num_clients}",
        )

    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    cap = n / num_clients
    for _ in range(max_attempts):
        idx_batch: list[list[int]] = [[] for _ in range(num_clients)]
        for k in classes:
            idx_k = np.where(labels == k)[0]
            rng.shuffle(idx_k)
            p = rng.dirichlet(np.repeat(alpha, num_clients))
            # Clients at or above the cap stop receiving samples. At least one
            # client is always open: the samples assigned so far number < n.
            open_clients = np.array([len(idx_j) < cap for idx_j in idx_batch])
            p = p * open_clients
            total = p.sum()
            p = p / total if total > 0 else open_clients / open_clients.sum()
            cuts = (np.cumsum(p) * len(idx_k)).astype(int)[:-1]
            for idx_j, part in zip(idx_batch, np.split(idx_k, cuts), strict=True):
                idx_j.extend(part.tolist())
        if min(len(idx_j) for idx_j in idx_batch) >= min_size:
            return [np.sort(np.asarray(idx_j, dtype=np.int64)) for idx_j in idx_batch]
    raise ValueError(
        f"partition_dirichlet could not give every one of num_clients={num_clients} clients "
        f"at least min_size={min_size} samples in max_attempts={max_attempts} draws "
        f"(alpha={alpha}, {n} samples). Lower `min_size`, raise `alpha` or raise "
        "`max_attempts`."
    )


def partition_iid(x: Sized, y: Sized, num_clients: int, *, seed: int = 0) -> list[np.ndarray]:
    """Splits a data set uniformly at random into nearly equal client shares.

    Args:
      x: Features; only its length is used, to check it against `y`.
      y: Labels (any kind), one per row of `x`.
      num_clients: Number of clients, from 1 to the number of samples.
      seed: Seed of the ``np.random.default_rng`` that shuffles the indices.

    Returns:
      A list of `num_clients` int64 arrays of indices into `x` and `y`, each
      sorted ascending. Sizes differ by at most 1 (larger shares come first)
      and every index appears in exactly one array.

    Raises:
      ValueError: If an argument is invalid or `num_clients` exceeds the
        number of samples.

    Examples:
      >>> import numpy as np
      >>> [len(p) for p in partition_iid(np.zeros(10), np.zeros(10), 3)]
      [4, 3, 3]
    """
    num_clients = _check_int("num_clients", num_clients, 1)
    seed = _check_int("seed", seed, 0)
    n = _num_samples(x, y)
    if num_clients > n:
        raise _invalid(
            "num_clients",
            f"an int <= the number of samples ({n})",
            f"num_clients={num_clients}",
        )
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, num_clients)]
