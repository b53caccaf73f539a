"""The accounting every method reports, in one shape, whatever builds it.

A method's metrics hold ``communication=OrderedDict(upload_params, upload_bytes,
aggregated)`` (LUAR reports the same numbers, and more, under ``luar``):
`keras_luar.training.report` reads them into the History.
"""

from __future__ import annotations

import collections

import tensorflow as tf


def communication_measurements(
    *,
    upload_params: tf.Tensor,
    upload_bytes: tf.Tensor,
    aggregated: tf.Tensor,
) -> collections.OrderedDict:
    """The accounting every method reports, under the metrics key ``communication``.

    Args:
      upload_params: int64 scalar, numbers uploaded this round by all
        participating clients together.
      upload_bytes: int64 scalar, bytes uploaded this round by all clients.
      aggregated: float32 vector with one entry per trainable variable: the
        fraction of participating clients whose update of that variable was
        uploaded in full and aggregated this round (1 or 0 for methods that
        decide per round, a fraction for per-client decisions such as LBGM's).
        Summed over rounds it gives the per-layer aggregation counts.

    Returns:
      ``OrderedDict(upload_params=..., upload_bytes=..., aggregated=...)``.
    """
    return collections.OrderedDict(
        upload_params=tf.cast(upload_params, tf.int64),
        upload_bytes=tf.cast(upload_bytes, tf.int64),
        aggregated=tf.cast(aggregated, tf.float32),
    )
