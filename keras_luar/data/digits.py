"""The default federated data set: scikit-learn's 8x8 handwritten digits.

The digits ship inside scikit-learn (1797 images, 10 classes), so examples,
tests and notebooks run offline and in seconds. A stratified test split is
held out first and never given to a client; the rest is partitioned across
clients with `partition_dirichlet` (or `partition_iid`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_luar.data.federated import FederatedData
from keras_luar.data.partition import (
    _check_alpha,
    _check_int,
    _invalid,
    partition_dirichlet,
    partition_iid,
)

# FederatedData lived here; old imports (`from keras_luar.data.digits import ...`) still work.
__all__ = ["FederatedData", "load_digits_federated"]


def load_digits_federated(
    num_clients: int = 16,
    alpha: float = 0.5,
    seed: int = 0,
    *,
    test_fraction: float = 0.25,
    min_size: int = 10,
    iid: bool = False,
) -> FederatedData:
    """Loads scikit-learn's digits and splits them into federated clients.

    Pixels are scaled to [0, 1] as float32 with shape ``(8, 8, 1)``; labels
    are int32. A stratified test split is taken first, then the training part
    is partitioned across clients.

    Args:
      num_clients: Number of clients, >= 1.
      alpha: Dirichlet concentration for the non-IID split (ignored when
        `iid` is True), > 0.
      seed: Seeds both the train/test split and the client partition.
      test_fraction: Fraction of all samples held out for testing, in (0, 1).
      min_size: Smallest number of training samples per client (non-IID
        split only).
      iid: Whether to split the training data uniformly at random instead.

    Returns:
      A `FederatedData` with `num_clients` clients.

    Raises:
      ValueError: If an argument is invalid, if the test or training part
        would have fewer samples than there are classes, or if the partition
        fails (see `partition_dirichlet`).

    Examples:
      >>> data = load_digits_federated(num_clients=4, alpha=0.5)
      >>> len(data.client_data)
      4
      >>> sizes = [len(y) for _, y in data.client_arrays.values()]
      >>> sum(sizes) + len(data.test_data[1])
      1797
    """
    num_clients = _check_int("num_clients", num_clients, 1)
    if not iid:
        alpha = _check_alpha(alpha)
        min_size = _check_int("min_size", min_size, 0)
    seed = _check_int("seed", seed, 0)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0 < test_fraction < 1
    ):
        raise _invalid("test_fraction", "a float in (0, 1)", f"test_fraction={test_fraction!r}")

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    num_classes = int(np.unique(y).size)
    # A stratified split needs at least one sample of each class on each side;
    # sklearn rounds the test size up.
    num_test = math.ceil(test_fraction * len(y))
    if min(num_test, len(y) - num_test) < num_classes:
        raise _invalid(
            "test_fraction",
            f"a fraction leaving at least {num_classes} of the {len(y)} samples on each side",
            f"test_fraction={test_fraction!r}",
        )
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )

    if iid:
        parts = partition_iid(x_train, y_train, num_clients, seed=seed)
    else:
        parts = partition_dirichlet(
            x_train, y_train, num_clients, alpha, min_size=min_size, seed=seed
        )
    return FederatedData.from_partition(
        x_train, y_train, parts, (x_test, y_test), num_classes, tuple(x.shape[1:])
    )
