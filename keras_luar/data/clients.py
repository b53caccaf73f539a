"""Client data in the forms users have it (kept for the imports it always had).

The conversion and the checks live in `keras_luar.training.client_data` and
`keras_luar.training.data_checks`, where the trainer's data flows through them
once; this module keeps `as_client_datasets` and `check_client_datasets`.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from keras_luar.training.client_data import Clients, as_client_datasets

__all__ = ["as_client_datasets", "check_client_datasets"]


def check_client_datasets(
    datasets: Mapping[str, tf.data.Dataset],
    model: tf.keras.Model,
    *,
    sparse_labels: bool,
    scan: bool = True,
) -> bool:
    """Checks client datasets against each other and `model`; returns whether they are batched.

    Args:
      datasets: ``{client_id: dataset}`` with ``(x, y)`` elements.
      model: The built Keras model the data is for.
      sparse_labels: Whether the loss takes class indices.
      scan: Also read every element once (label values, finiteness).

    Raises:
      ValueError: Naming the client (see `keras_luar.training.data_checks`).
    """
    from keras_luar.training.data_checks import ModelSignature, check_clients

    clients = Clients(dict(datasets))
    check_clients(clients, ModelSignature(model, sparse_labels=sparse_labels), scan=scan)
    return clients.batched
