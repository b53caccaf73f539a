"""How a client's update is weighted in the server's average, and what data that needs.

Three weightings, the same for every method:

* ``"uniform"``: every participating client counts 1 (the official FedLUAR and
  FedLAMA code).
* ``"example"``: client i counts n_i, the size of its local data set
  (McMahan et al.'s FedAvg, the official LBGM and FedPart code). The number
  is not in the batches a client trains on in a round (every client trains
  τ batches, so those hold about τ·B examples for everyone), so a process
  built with this weighting takes, for each client, a `SizedClientData`: the
  round's batches and a one-element dataset holding n_i.
  `FederatedTrainer` builds it from the data it inspects before round 0.
* ``"round_examples"``: the number of examples the client trained on this
  round, as TFF's own builders count them (``tff.learning.ClientWeighting.
  NUM_EXAMPLES``). With τ batches of B examples it is τ·B for every client,
  so it equals ``"uniform"`` unless batches are cut short.

Only a process built with ``"example"`` takes `SizedClientData`; the others
take the batches alone, as TFF's processes do.

Examples:
  >>> import numpy as np, tensorflow as tf
  >>> data = sized_client_data(tf.data.Dataset.range(3), 10)
  >>> float(next(iter(data.data_size)))
  10.0
  >>> check_weighting("client_weighting", "example")
  'example'
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._types import WEIGHTINGS, ClientWeighting
from keras_luar._validation import check_weighting

__all__ = [
    "WEIGHTINGS",
    "ClientWeighting",
    "SizedClientData",
    "check_weighting",
    "client_data_type",
    "client_weight",
    "sized_client_data",
    "unpack_client_data",
]


class SizedClientData(NamedTuple):
    """One client's input to a round when clients are weighted by data set size."""

    batches: Any  # tf.data.Dataset: the round's batches
    data_size: Any  # tf.data.Dataset with one float32 scalar: n_i, the client's data set size


def sized_client_data(batches: tf.data.Dataset, data_size: int | float) -> SizedClientData:
    """Packs a client's round batches with its data set size, for ``"example"`` weighting.

    Args:
      batches: The client's batches for the round.
      data_size: n_i, the number of examples in the client's local data set (> 0).

    Returns:
      A `SizedClientData`.

    Raises:
      ValueError: If `data_size` is not a positive finite number.
    """
    size = float(data_size)
    if not (np.isfinite(size) and size > 0):
        raise ValueError(
            "Invalid value for argument `data_size`. Expected the number of examples of the "
            f"client's data set, > 0. Received: data_size={data_size!r}"
        )
    return SizedClientData(batches, tf.data.Dataset.from_tensors(np.float32(size)))


def client_data_type(batches_type: tff.SequenceType, weighting: str) -> tff.Type:
    """The TFF type of one client's round input under `weighting`."""
    if weighting != "example":
        return batches_type
    return tff.StructWithPythonType(
        [("batches", batches_type), ("data_size", tff.SequenceType(tff.TensorType(np.float32)))],
        SizedClientData,
    )


def unpack_client_data(data: Any, weighting: str) -> tuple[tf.data.Dataset, tf.Tensor | None]:
    """Inside a TFF computation: the batches and (for ``"example"``) n_i as a float32 scalar."""
    if weighting != "example":
        return data, None
    size = data.data_size.reduce(tf.constant(0.0, tf.float32), lambda total, n: total + n)
    return data.batches, size


def client_weight(
    weighting: str, num_examples: tf.Tensor, data_size: tf.Tensor | None
) -> tf.Tensor:
    """The float32 weight of a client's update under `weighting`.

    Args:
      weighting: One of `WEIGHTINGS`.
      num_examples: The examples the client trained on this round.
      data_size: n_i from `unpack_client_data` (None unless ``"example"``).

    Returns:
      A float32 scalar.
    """
    if weighting == "uniform":
        return tf.constant(1.0, tf.float32)
    if weighting == "example":
        return tf.cast(data_size, tf.float32)
    return tf.cast(num_examples, tf.float32)
