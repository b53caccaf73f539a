"""The default federated data set: scikit-learn's 8x8 handwritten digits.

The digits ship inside scikit-learn (1797 images, 10 classes), so examples,
tests and notebooks run offline and in seconds. A stratified test split is
held out first and never given to a client; the rest is partitioned across
clients with `partition_dirichlet` (or `partition_iid`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from keras_luar.data.partition import (
    _check_alpha,
    _check_int,
    _invalid,
    partition_dirichlet,
    partition_iid,
)


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
    """Per-client training data and a held-out test set.

    Attributes:
      client_data: Client id (``"client_000"``, ...) to an unbatched
        `tf.data.Dataset` of ``(x, y)`` pairs.
      client_arrays: Client id to the same data as ``(x, y)`` numpy arrays.
      test_data: ``(x_test, y_test)``, shared by no client.
      num_classes: Number of classes.
      input_shape: Shape of one example, without the batch dimension.

    Examples:
      >>> data = load_digits_federated(num_clients=4)
      >>> data.client_ids
      ['client_000', 'client_001', 'client_002', 'client_003']
      >>> data.num_classes, data.input_shape
      (10, (8, 8, 1))
    """

    client_data: dict[str, tf.data.Dataset]
    client_arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    test_data: tuple[np.ndarray, np.ndarray]
    num_classes: int
    input_shape: tuple[int, ...]

    @classmethod
    def from_partition(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        parts: list[np.ndarray],
        test_data: tuple[np.ndarray, np.ndarray],
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> FederatedData:
        """Builds the clients ``client_000``, ... from index arrays into ``(x, y)``.

        Args:
          x: All training inputs.
          y: All training labels.
          parts: One index array per client (e.g. from `partition_dirichlet`).
          test_data: The held-out ``(x_test, y_test)``.
          num_classes: Number of classes.
          input_shape: Shape of one example.

        Returns:
          The `FederatedData`.
        """
        # Zero-padded ids keep lexicographic and numeric order the same.
        width = max(3, len(str(len(parts) - 1)))
        client_arrays = {f"client_{i:0{width}d}": (x[idx], y[idx]) for i, idx in enumerate(parts)}
        client_data = {
            cid: tf.data.Dataset.from_tensor_slices(arrays) for cid, arrays in client_arrays.items()
        }
        return cls(client_data, client_arrays, test_data, num_classes, tuple(input_shape))

    @property
    def client_ids(self) -> list[str]:
        """The client ids, in order."""
        return list(self.client_data)

    def test_dataset(self, batch_size: int = 64) -> tf.data.Dataset:
        """Returns the test set as a batched `tf.data.Dataset` of ``(x, y)``.

        Args:
          batch_size: Examples per batch; the last batch may be smaller.

        Returns:
          A dataset of ``(x, y)`` batches, in a fixed order.

        Raises:
          ValueError: If `batch_size` is not an int >= 1.

        Examples:
          >>> data = load_digits_federated(num_clients=2)
          >>> x, y = next(iter(data.test_dataset(batch_size=8)))
          >>> x.shape.as_list(), y.shape.as_list()
          ([8, 8, 8, 1], [8])
        """
        batch_size = _check_int("batch_size", batch_size, 1)
        return tf.data.Dataset.from_tensor_slices(self.test_data).batch(batch_size)


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
