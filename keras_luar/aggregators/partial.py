"""FedPart's aggregation: only the variables trained this round are sent and averaged.

`PartialUpdateFactory` is a weighted aggregation factory on the masked-upload
skeleton of `keras_luar.aggregators.masked`, with the mask of a round given by a
schedule of the round number (`keras_luar.algorithms.FedPartSchedule`).

References:
  Wang, Liu, Zhu, Li, Wu, Dai. "Why Go Full? Elevating Federated Learning
  Through Partial Network Updates", NeurIPS 2024.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._validation import check_weighted_factory
from keras_luar.aggregators.masked import MaskedParts, MaskedUploadFactory
from keras_luar.aggregators.measurements import communication_measurements


class PartialUpdateState(NamedTuple):
    """Server state of `PartialUpdateFactory`."""

    round_num: Any  # int32 []: rounds aggregated so far; selects this round's variables
    inner: Any  # state of the inner aggregation process


class PartialUpdateFactory(MaskedUploadFactory):
    """Aggregates only the variables trained this round (FedPart's aggregation).

    One round (t counts from 0, kept in the state):

    1. Server: the mask ``trainable_schedule(t)`` is broadcast.
    2. Clients: variables outside the mask are zero-filled and count as not
       uploaded (TFF types are static: the simulation carries zeros where a
       deployment sends nothing; with FedPart's frozen variables the update is
       exactly zero anyway). A client with a non-finite value or weight 0 is
       zeroed and weighted 0.
    3. Inner aggregation (default: `tff.aggregators.MeanFactory`, which
       weights clients by the weights it is given; the number of examples in
       `build_fedpart`).
    4. Server: if every client had weight 0, the result is zero (no update)
       instead of the inner mean's 0/0; variables outside the mask are zero.

    Measurements: ``communication`` (``upload_params`` = Σ numel of the
    trained variables × participating clients, ``upload_bytes`` the same at
    the variables' dtype sizes or at the inner factory's ``encoded_bytes``,
    ``aggregated`` = the fraction of participating clients aggregated for a
    trained variable, 1.0 in an ordinary round, and 0.0 for the others);
    ``fedpart=OrderedDict(group=<int32, -1 for full>)`` when `group_schedule`
    is given; and ``inner``.

    Args:
      trainable_schedule: ``f(round_num: int32 tensor) -> bool tensor`` with one
        entry per leaf of the value type (e.g.
        `keras_luar.algorithms.FedPartSchedule.trainable_mask_fn`). It must use the same round
        counter as the client work (both count from 0, one per round).
      group_schedule: Optional ``f(round_num) -> int32 scalar`` reported as
        ``fedpart.group`` (e.g. `keras_luar.algorithms.FedPartSchedule.group_index`).
      inner_factory: A `tff.aggregators.WeightedAggregationFactory` for the
        trained variables; defaults to `tff.aggregators.MeanFactory()`.

    Raises:
      TypeError: If a schedule is not callable or `inner_factory` is not a
        weighted factory. `create` raises ValueError if the schedule's mask
        does not have one entry per tensor of the value type.

    Examples:
      >>> import numpy as np, tensorflow as tf, tensorflow_federated as tff
      >>> from keras_luar.algorithms import FedPartSchedule
      >>> schedule = FedPartSchedule(2, warmup_rounds=1, rounds_per_group=1,
      ...                            full_rounds_between_cycles=0)
      >>> factory = PartialUpdateFactory(
      ...     schedule.trainable_mask_fn([[0], [1]], 2), group_schedule=schedule.group_index)
      >>> process = factory.create(tff.types.to_type([(np.float32, (2, 2)), (np.float32, (2,))]),
      ...                          tff.TensorType(np.float32))

    References:
      Wang et al., "Why Go Full? Elevating Federated Learning Through Partial
      Network Updates", NeurIPS 2024.
    """

    def __init__(
        self,
        trainable_schedule: Callable[[tf.Tensor], tf.Tensor],
        *,
        group_schedule: Callable[[tf.Tensor], tf.Tensor] | None = None,
        inner_factory: tff.aggregators.WeightedAggregationFactory | None = None,
    ):
        if not callable(trainable_schedule):
            raise TypeError(
                "Invalid value for argument `trainable_schedule`. Expected a callable of the "
                f"round number. Received: trainable_schedule={trainable_schedule!r}"
            )
        if group_schedule is not None and not callable(group_schedule):
            raise TypeError(
                "Invalid value for argument `group_schedule`. Expected a callable of the round "
                f"number or None. Received: group_schedule={group_schedule!r}"
            )
        inner_factory = check_weighted_factory("inner_factory", inner_factory)
        self._trainable_schedule = trainable_schedule
        self._group_schedule = group_schedule
        self._inner_factory = inner_factory

    def _parts(self, value_type: tff.types.Type) -> MaskedParts:
        num_variables = len(tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)))
        with tf.Graph().as_default():
            probe = tf.convert_to_tensor(self._trainable_schedule(tf.constant(0, tf.int32)))
        if probe.shape.as_list() != [num_variables]:
            raise ValueError(
                "PartialUpdateFactory.create: `trainable_schedule` must return a bool vector "
                f"with one entry per tensor of the value type ({num_variables}). Received a "
                f"tensor of shape {probe.shape}"
            )
        trainable_schedule = self._trainable_schedule
        group_schedule = self._group_schedule

        def init_state(inner):
            return PartialUpdateState(round_num=tf.constant(0, tf.int32), inner=inner)

        def sent_mask(state):
            return trainable_schedule(state.round_num)

        def server_update(state, inner_state, flat, upload):
            # Only the trained variables move; a round with every client dropped moves none.
            keep = tf.unstack(tf.logical_and(upload.sent, upload.any_valid), num=num_variables)
            result = [tf.where(k, t, tf.zeros_like(t)) for k, t in zip(keep, flat, strict=True)]
            fraction = tf.math.divide_no_nan(
                tf.cast(upload.num_valid, tf.float32), tf.cast(upload.num_clients, tf.float32)
            )
            measurements = collections.OrderedDict(
                communication=communication_measurements(
                    upload_params=upload.params,
                    upload_bytes=upload.bytes,
                    aggregated=tf.cast(upload.sent, tf.float32) * fraction,
                )
            )
            if group_schedule is not None:
                group = tf.cast(tf.reshape(group_schedule(state.round_num), []), tf.int32)
                measurements["fedpart"] = collections.OrderedDict(group=group)
            new_state = PartialUpdateState(round_num=state.round_num + 1, inner=inner_state)
            return new_state, result, measurements

        return MaskedParts(init_state, sent_mask, server_update)
