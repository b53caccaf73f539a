"""The skeleton of an aggregation in which clients send only some of their update.

FedLUAR leaves recycled layers at home and FedPart sends one layer group; both
are weighted aggregation factories that differ only in where the mask of sent
variables comes from and what the server makes of the aggregate. This module
writes everything else once, as TFF's ``robust._make_wrapper`` does for clipping
and zeroing:

1. Server: the factory's state gives this round's mask of sent variables, which
   is broadcast to the clients.
2. Clients: a client whose update holds NaN/Inf anywhere, or whose weight is 0,
   is dropped (its update is zeroed and weighted 0); the variables that are not
   sent are zero-filled (TFF's types are static, so the simulation carries zeros
   where a deployment would send nothing). ``uniform`` weighs every client 1.
3. The inner factory (TFF's mean by default) aggregates what was sent. An
   unweighted inner factory (TFF's differential privacy, `SecureSumFactory`
   under `UnweightedMeanFactory`...) gets no weights: every client counts 1,
   and a dropped client still counts, with a zero update.
4. Server: if every client was dropped the mean is 0/0, so it is replaced by
   zeros; then the factory's own ``server_update`` makes the result and the new
   state, given the round's upload in numbers and bytes per client.

The upload is counted as a deployment would send it: every sent variable in
full, at its dtype, or at the inner factory's ``encoded_bytes(shape, dtype)`` if
it has one (`keras_luar.aggregators.QuantizationFactory` does). TFF's own
factories send float32 numbers as 4 bytes each: clipping, zeroing and the
central Gaussian mechanism send the (clipped) float update and add the noise
at the server; `SecureSumFactory` sends each float, of any width, as one
32-bit integer of its quantized range. The scalar weight and the one-number
side channels of adaptive clipping, zeroing and secure summation are not
counted.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _runtime
from keras_luar._federated import server_and_clients, state_around_inner
from keras_luar._validation import check_aggregation_types, holds_secure_sum
from keras_luar.algorithms.local_training import all_finite


@dataclasses.dataclass(frozen=True)
class Upload:
    """What the round's clients sent, handed to a factory's ``server_update``.

    Attributes:
      sent: bool [n], the mask of sent variables (in `tf.nest.flatten` order).
      params_per_client: int64 [], numbers one client sent.
      bytes_per_client: int64 [], bytes one client sent.
      num_clients: int32 [], participating clients.
      num_valid: int32 [], clients not dropped.
    """

    sent: Any
    params_per_client: Any
    bytes_per_client: Any
    num_clients: Any
    num_valid: Any

    @property
    def params(self) -> Any:
        """Numbers all clients sent."""
        return self.params_per_client * tf.cast(self.num_clients, tf.int64)

    @property
    def bytes(self) -> Any:
        """Bytes all clients sent."""
        return self.bytes_per_client * tf.cast(self.num_clients, tf.int64)

    @property
    def any_valid(self) -> Any:
        """Whether some client was kept."""
        return self.num_valid > 0


def variable_costs(value_type: Any, inner_factory: Any) -> tuple[np.ndarray, np.ndarray]:
    """Numbers and bytes one client sends for each variable of `value_type` (int64 arrays)."""
    specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
    if not all(s.shape.is_fully_defined() for s in specs):
        raise TypeError(
            f"expected tensors with fully defined shapes. Received: value_type={value_type}"
        )
    encoded_bytes = getattr(inner_factory, "encoded_bytes", None)
    # TFF's SecureSumFactory quantizes a float to an integer in [0, 2**32 - 1]
    # before the secure sum, whatever the float's own width.
    secure = holds_secure_sum(inner_factory)
    sizes, nbytes = [], []
    for spec in specs:
        sizes.append(spec.shape.num_elements())
        if callable(encoded_bytes):
            nbytes.append(int(encoded_bytes(spec.shape, spec.dtype)))
        elif secure and spec.dtype.is_floating:
            nbytes.append(spec.shape.num_elements() * 4)
        else:
            nbytes.append(spec.shape.num_elements() * spec.dtype.size)
    return np.array(sizes, np.int64), np.array(nbytes, np.int64)


@dataclasses.dataclass(frozen=True)
class MaskedParts:
    """What one factory adds to the skeleton.

    Attributes:
      init_state: ``init_state(inner_state) -> state`` (TF code, traced once).
      sent_mask: ``sent_mask(state) -> bool [n]``: the variables sent this round.
      server_update: ``server_update(state, inner_state, mean, upload) ->
        (new_state, result, measurements)``: `mean` is the flat list of the
        inner result (zeros when every client was dropped), `result` the flat
        list to return, `measurements` the factory's own.
      uniform: Weigh every kept client 1 instead of its given weight.
    """

    init_state: Callable[[Any], Any]
    sent_mask: Callable[[Any], Any]
    server_update: Callable[[Any, Any, list, Upload], tuple[Any, list, Any]]
    uniform: bool = False


class MaskedUploadFactory(tff.aggregators.WeightedAggregationFactory):
    """Base of the weighted factories whose clients send part of their update.

    A subclass keeps its inner factory in ``self._inner_factory`` and writes
    ``_parts(value_type) -> MaskedParts``, which checks `value_type` against
    its own settings (raising ValueError) and returns its state, mask and
    server step; `create` does the rest.
    """

    _inner_factory: Any

    def create(
        self, value_type: tff.types.Type, weight_type: tff.types.Type
    ) -> tff.templates.AggregationProcess:
        """Builds the aggregation process for `value_type` (see the class docstring).

        Args:
          value_type: A structure of float tensors with fully defined shapes.
          weight_type: A float `tff.TensorType`.

        Returns:
          A `tff.templates.AggregationProcess` whose state is the factory's
          state type (`LuarState`, `PartialUpdateState`).

        Raises:
          TypeError: If the types are not as above.
          ValueError: If the value type does not fit the factory's settings
            (the factory's docstring says which).
        """
        owner = type(self).__name__
        value_type, weight_type = check_aggregation_types(owner, value_type, weight_type)
        return build_masked_process(
            value_type=value_type,
            weight_type=weight_type,
            inner_factory=self._inner_factory,
            parts=self._parts(value_type),
        )

    def _parts(self, value_type: Any) -> MaskedParts:
        raise NotImplementedError(f"{type(self).__name__} must define _parts(value_type)")


def build_masked_process(
    *,
    value_type: Any,
    weight_type: Any,
    inner_factory: tff.aggregators.WeightedAggregationFactory
    | tff.aggregators.UnweightedAggregationFactory,
    parts: MaskedParts,
) -> tff.templates.AggregationProcess:
    """Builds the aggregation process described in the module docstring.

    Args:
      value_type: A structure of float tensors, checked by
        `check_aggregation_types` (as `MaskedUploadFactory.create` does).
      weight_type: A float tensor type, checked alike.
      inner_factory: Aggregates the sent part; weighted or unweighted.
      parts: The factory's state, mask and server step.

    Returns:
      A `tff.templates.AggregationProcess` whose measurements are
      ``OrderedDict(**<the factory's measurements>, inner=<inner measurements>)``.
    """
    _runtime.install()  # TFF computations follow: guard its worker processes
    init_state, sent_mask, server_update = parts.init_state, parts.sent_mask, parts.server_update
    uniform = parts.uniform
    sizes, nbytes = variable_costs(value_type, inner_factory)
    num_variables = len(sizes)
    weighted_inner = isinstance(inner_factory, tff.aggregators.WeightedAggregationFactory)
    if weighted_inner:
        inner_process = inner_factory.create(value_type, weight_type)
    else:
        inner_process = inner_factory.create(value_type)
    init_fn, state_type, get_inner = state_around_inner(inner_process, init_state)
    inner_state_type = inner_process.initialize.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_mask(state):
        return tf.reshape(tf.cast(sent_mask(state), tf.bool), [num_variables])

    mask_type = get_mask.type_signature.result

    @tff.tensorflow.computation(value_type, weight_type, mask_type)
    def prepare_upload(value, weight, sent):
        flat = tf.nest.flatten(value)
        valid = tf.logical_and(all_finite(flat), weight > 0)
        keep = tf.unstack(tf.logical_and(sent, valid), num=num_variables)
        # tf.where, not a product: 0 * NaN would still be NaN in the inner sum.
        flat = [tf.where(k, t, tf.zeros_like(t)) for k, t in zip(keep, flat, strict=True)]
        kept_weight = tf.ones_like(weight) if uniform else weight
        return (
            tf.nest.pack_sequence_as(value, flat),
            tf.where(valid, kept_weight, tf.zeros_like(weight)),
            tf.cast(valid, tf.int32),
            tf.constant(1, tf.int32),
        )

    inner_result_type = inner_process.next.type_signature.result.result.member

    @tff.tensorflow.computation(
        state_type, inner_state_type, inner_result_type, mask_type, np.int32, np.int32
    )
    def server_step(state, inner_state, mean_value, sent, num_valid, num_clients):
        sent64 = tf.cast(sent, tf.int64)
        upload = Upload(
            sent=sent,
            params_per_client=tf.reduce_sum(sent64 * sizes),
            bytes_per_client=tf.reduce_sum(sent64 * nbytes),
            num_clients=num_clients,
            num_valid=num_valid,
        )
        # With every client dropped the inner mean is 0/0 (TFF's MeanFactory divides
        # without a guard): the round contributes nothing.
        flat = [
            tf.where(upload.any_valid, t, tf.zeros_like(t)) for t in tf.nest.flatten(mean_value)
        ]
        new_state, result, measurements = server_update(state, inner_state, flat, upload)
        return new_state, tf.nest.pack_sequence_as(mean_value, result), measurements

    @tff.federated_computation(*server_and_clients(state_type, value_type, weight_type))
    def next_fn(state, value, weight):
        # Client computation: the mask travels down, the unsent variables stay home.
        sent = tff.federated_map(get_mask, state)
        upload = tff.federated_map(prepare_upload, (value, weight, tff.federated_broadcast(sent)))
        # Inner aggregation of the sent part.
        inner_state = tff.federated_map(get_inner, state)
        if weighted_inner:
            inner_output = inner_process.next(inner_state, upload[0], upload[1])
        else:
            inner_output = inner_process.next(inner_state, upload[0])
        num_valid = tff.federated_sum(upload[2])
        num_clients = tff.federated_sum(upload[3])
        # Server computation: the factory's own step.
        new_state, result, measurements = tff.federated_map(
            server_step,
            (state, inner_output.state, inner_output.result, sent, num_valid, num_clients),
        )
        # Output preparation.
        names = [
            name for name, _ in tff.structure.iter_elements(measurements.type_signature.member)
        ]
        outputs = collections.OrderedDict((name, measurements[name]) for name in names)
        outputs["inner"] = inner_output.measurements
        return tff.templates.MeasuredProcessOutput(
            state=new_state, result=result, measurements=tff.federated_zip(outputs)
        )

    return tff.templates.AggregationProcess(init_fn, next_fn)
