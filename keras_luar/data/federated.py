"""`FederatedData`: what every loader of `keras_luar.data` returns.

Per-client training data, both as unbatched `tf.data.Dataset` objects and as
the numpy arrays they were made from, and a held-out test set no client holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_luar.data.partition import _check_int


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
      >>> from keras_luar.data import load_digits_federated
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
    def from_client_arrays(
        cls,
        client_arrays: dict[str, tuple[np.ndarray, np.ndarray]],
        test_data: tuple[np.ndarray, np.ndarray],
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> FederatedData:
        """Builds the clients' datasets from their ``(x, y)`` arrays.

        Args:
          client_arrays: Client id to ``(x, y)``, in client order.
          test_data: The held-out ``(x_test, y_test)``.
          num_classes: Number of classes.
          input_shape: Shape of one example.

        Returns:
          The `FederatedData`, whose datasets hold what the arrays hold.

        Examples:
          >>> import numpy as np
          >>> xy = (np.zeros([3, 2], np.float32), np.arange(3, dtype=np.int32))
          >>> data = FederatedData.from_client_arrays({"a": xy}, xy, 3, (2,))
          >>> data.client_ids, len(list(data.client_data["a"]))
          (['a'], 3)
        """
        client_data = {
            cid: tf.data.Dataset.from_tensor_slices(arrays) for cid, arrays in client_arrays.items()
        }
        return cls(client_data, client_arrays, test_data, num_classes, tuple(input_shape))

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

        Examples:
          >>> import numpy as np
          >>> x, y = np.zeros([5, 2], np.float32), np.arange(5, dtype=np.int32)
          >>> data = FederatedData.from_partition(x, y, [[0, 1], [2, 3, 4]], (x, y), 5, (2,))
          >>> data.client_ids, [len(y) for _, y in data.client_arrays.values()]
          (['client_000', 'client_001'], [2, 3])
        """
        # Zero-padded ids keep lexicographic and numeric order the same.
        width = max(3, len(str(len(parts) - 1)))
        client_arrays = {f"client_{i:0{width}d}": (x[idx], y[idx]) for i, idx in enumerate(parts)}
        return cls.from_client_arrays(client_arrays, test_data, num_classes, input_shape)

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
          >>> from keras_luar.data import load_digits_federated
          >>> data = load_digits_federated(num_clients=2)
          >>> x, y = next(iter(data.test_dataset(batch_size=8)))
          >>> x.shape.as_list(), y.shape.as_list()
          ([8, 8, 8, 1], [8])
        """
        batch_size = _check_int("batch_size", batch_size, 1)
        return tf.data.Dataset.from_tensor_slices(self.test_data).batch(batch_size)


def _concatenate_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    empty: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Joins ``(x, y)`` parts into one ``(x, y)``; `empty` if there are no parts."""
    if not pairs and empty is not None:
        return empty
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


__all__ = ["FederatedData"]
