"""FedPAQ's stochastic quantization as a TFF aggregation factory.

`QuantizationFactory` is a `tff.aggregators.WeightedAggregationFactory`. Each
client replaces every tensor v of its update by an unbiased, norm-scaled
stochastic quantization with s levels (QSGD style), then an inner factory
(`tff.aggregators.MeanFactory` by default) aggregates the quantized updates:

    Q(v)_j = ||v|| · sign(v_j) · ξ_j / s,   r_j = s · |v_j| / ||v||,
    ξ_j = floor(r_j) + 1 with probability r_j - floor(r_j), else floor(r_j),

so E[Q(v)] = v. A zero tensor is quantized to zeros.

It composes with FedLUAR as ``LuarFactory(δ, inner_factory=QuantizationFactory(s))``:
the layers that are sent are quantized, the recycled ones arrive as zeros (which
quantize to zeros), and LUAR recycles the stored quantized aggregate.

``requantize=True`` quantizes the aggregate once more at the server, tensor by
tensor with the same s levels, before it leaves the process. The official
FedPAQ + LUAR code (swblaster/FedLUAR at commit a009835, ``fedpaq_luar.py``)
does this: the aggregate it applies, stores for recycling and scores is
Q(mean of Q(Δ^i)). Its plain FedPAQ (``fedpaq.py``) does not, so the default
is off; `FederatedTrainer` turns it on for FedPAQ + LUAR.

Randomness. TFF clients do not know their ids, so the per-client seed is
derived from what a client has: the factory state holds the run seed and a
round counter, the server broadcasts ``[seed, round]``, and each client folds
a fingerprint of its own update into it (`tf.random.experimental.stateless_fold_in`),
then folds in the position of each tensor. The fingerprint is the int64 sum of
the bit patterns of all values (each value bitcast to a signed integer of its
width). A run is therefore reproducible for a given seed and data, and clients
and rounds draw different uniforms. Two clients whose updates are bit-for-bit
equal in the same round draw the same uniforms: their quantizations are then
correlated, each one still unbiased.

Communication. `QuantizationFactory.encoded_bytes` counts the real fixed-width
encoding: ceil(log2(s + 1)) bits for the level (0..s) plus one sign bit per
coordinate, packed per tensor and rounded up to whole bytes, plus one float32
norm per tensor. The FedLUAR paper instead reports FedPAQ's cost as s bits per
coordinate relative to 32-bit floats (0.50 for s = 16, 0.25 for s = 8), so its
ratios differ from the byte counts here (for s = 16: 6 bits, about 0.19).
`LuarFactory` uses `encoded_bytes` for its ``upload_bytes`` measurement when it
wraps this factory.

References:
  Reisizadeh, Mokhtari, Hassani, Jadbabaie, Pedarsani. "FedPAQ: A
  Communication-Efficient Federated Learning Method with Periodic Averaging
  and Quantization", AISTATS 2020.
  Alistarh, Grubic, Li, Tomioka, Vojnovic. "QSGD: Communication-Efficient SGD
  via Gradient Quantization and Encoding", NeurIPS 2017.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import _runtime
from keras_luar._federated import server_and_clients, state_around_inner
from keras_luar._validation import (
    check_aggregation_types,
    check_int,
    check_weighted_factory,
)

_NORM_BYTES = 4  # one float32 norm per tensor


class QuantizationState(NamedTuple):
    """Server state of `QuantizationFactory`."""

    round_num: Any  # int32 []: rounds aggregated so far
    seed: Any  # int64 []: run seed; clients derive their seeds from [seed, round]
    inner: Any  # state of the inner aggregation process


def bits_per_coordinate(levels: int) -> int:
    """Bits one coordinate costs in the fixed-width code: the level (0..s) plus the sign.

    Args:
      levels: s, the number of quantization levels (>= 1).

    Returns:
      ``ceil(log2(s + 1)) + 1``.

    Examples:
      >>> bits_per_coordinate(8), bits_per_coordinate(16)
      (5, 6)
    """
    # For s >= 1, ceil(log2(s + 1)) is the bit length of s; integers avoid float log2.
    return int(levels).bit_length() + 1


def quantize(value: tf.Tensor, levels: int, seed: tf.Tensor) -> tf.Tensor:
    """Unbiased norm-scaled stochastic quantization of one tensor.

    Args:
      value: A float tensor v.
      levels: s, the number of quantization levels (a Python int >= 1).
      seed: int32/int64 ``[2]`` seed of `tf.random.stateless_uniform`; the
        uniforms u have v's shape and ξ_j = floor(r_j) + [u_j < r_j - floor(r_j)].

    Returns:
      Q(v), with v's shape and dtype. Its entries are ``||v|| · k / s`` times the
      sign of v_j, for integers 0 <= k <= s; a zero tensor gives zeros.

    Examples:
      >>> import tensorflow as tf
      >>> seed = tf.constant([0, 1], tf.int64)
      >>> quantize(tf.constant([3.0, -4.0]), 5, seed).numpy()  # r = [3, 4]: exact levels
      array([ 3., -4.], dtype=float32)
      >>> quantize(tf.constant([1.0, 0.0]), 3, seed).numpy()  # one nonzero entry: r = s
      array([1., 0.], dtype=float32)

    References:
      Reisizadeh et al., "FedPAQ", AISTATS 2020 (the quantizer Q of Section 3).
    """
    value = tf.convert_to_tensor(value)
    # Half-precision arithmetic would make the probabilities r - floor(r) coarse.
    compute_dtype = tf.float64 if value.dtype == tf.float64 else tf.float32
    v = tf.cast(value, compute_dtype)
    s = tf.constant(levels, compute_dtype)
    norm = tf.norm(tf.reshape(v, [-1]))
    # divide_no_nan guards the zero tensor; the clip guards |v_j| / ||v|| rounding
    # above 1, which would otherwise allow ξ = s + 1.
    r = tf.clip_by_value(tf.math.divide_no_nan(tf.abs(v), norm) * s, 0.0, s)
    low = tf.floor(r)
    shape = v.shape if v.shape.is_fully_defined() else tf.shape(v)
    u = tf.random.stateless_uniform(shape, seed=seed, dtype=compute_dtype)
    xi = low + tf.cast(u < r - low, compute_dtype)
    return tf.cast(norm * tf.sign(v) * xi / s, value.dtype)


def quantize_aggregate(value: Any, levels: int, round_key: tf.Tensor) -> Any:
    """The server's re-quantization of an aggregate (`QuantizationFactory(requantize=True)`).

    Like `quantize_update`, with the round key folded with -1 first, so that the
    server's uniforms differ from every client's.

    Args:
      value: A structure of float tensors (the aggregated update).
      levels: s, the number of quantization levels.
      round_key: int64 ``[2]``, ``[seed, round]``.

    Returns:
      The quantized structure.
    """
    server_key = tf.random.experimental.stateless_fold_in(
        tf.cast(round_key, tf.int64), tf.constant(-1, tf.int64)
    )
    return quantize_update(value, levels, server_key)


def update_fingerprint(value: Any) -> tf.Tensor:
    """int64 sum of the bit patterns of all values of a structure of float tensors.

    Each value is bitcast to a signed integer of its own width (float64 to two
    int32 halves) and widened to int64 before the sum, so the sum cannot
    overflow for fewer than 2**32 values.

    Args:
      value: A float tensor or a structure of them.

    Returns:
      An int64 scalar.

    Examples:
      >>> import tensorflow as tf
      >>> int(update_fingerprint([tf.constant([1.0])]))  # 0x3f800000
      1065353216
    """
    total = tf.constant(0, tf.int64)
    for t in tf.nest.flatten(value):
        t = tf.convert_to_tensor(t)
        bits = tf.int16 if t.dtype.size == 2 else tf.int32
        total += tf.reduce_sum(tf.cast(tf.bitcast(t, bits), tf.int64))
    return total


def quantize_update(value: Any, levels: int, round_key: tf.Tensor) -> tf.Tensor:
    """The client step of `QuantizationFactory`: quantizes every tensor of `value`.

    The client seed is ``fold_in(round_key, update_fingerprint(value))`` and
    tensor i (in `tf.nest.flatten` order) draws with ``fold_in(client_seed, i)``,
    both with `tf.random.experimental.stateless_fold_in` and int64 data.

    Args:
      value: A structure of float tensors (one client's update).
      levels: s, the number of quantization levels.
      round_key: int64 ``[2]``, ``[seed, round]`` as broadcast by the server.

    Returns:
      The quantized structure, with the structure, shapes and dtypes of `value`.

    Examples:
      >>> import tensorflow as tf
      >>> q = quantize_update([tf.zeros([2, 2])], 8, tf.constant([0, 0], tf.int64))
      >>> float(tf.reduce_sum(tf.abs(q[0])))
      0.0
    """
    fold_in = tf.random.experimental.stateless_fold_in
    client_seed = fold_in(tf.cast(round_key, tf.int64), update_fingerprint(value))
    flat = [
        quantize(t, levels, fold_in(client_seed, tf.constant(i, tf.int64)))
        for i, t in enumerate(tf.nest.flatten(value))
    ]
    return tf.nest.pack_sequence_as(value, flat)


class QuantizationFactory(tff.aggregators.WeightedAggregationFactory):
    """FedPAQ's client-side stochastic quantization followed by an inner aggregation.

    Each client quantizes each tensor of its update with `quantize` (s levels,
    scaled by the tensor's L2 norm, unbiased); the inner factory then
    aggregates the quantized updates with the given weights, and its result is
    the result of this process (by default the weighted mean of the quantized
    updates). See the module docstring for how client seeds are derived and
    how bytes are counted.

    Args:
      levels: s, the number of quantization levels (the paper uses 16 for
        CIFAR-10 and 8 for FEMNIST and AG News).
      seed: Run seed of the stateless RNG; the same seed and data give the
        same run.
      inner_factory: A `tff.aggregators.WeightedAggregationFactory` for the
        quantized updates; defaults to `tff.aggregators.MeanFactory()`.
      requantize: Also quantize the inner result at the server, per tensor
        with s levels (`quantize_aggregate`), as the official FedPAQ + LUAR
        code does before it applies, stores and scores the aggregate.

    Raises:
      TypeError: If `levels` or `seed` is not an int (bools are rejected), or
        `inner_factory` is not a weighted factory.
      ValueError: If `levels` < 1 or `seed` does not fit in int64.

    Examples:
      >>> import numpy as np, tensorflow_federated as tff
      >>> factory = QuantizationFactory(8, seed=1)
      >>> factory.encoded_bytes((10, 10), np.float32)  # 100 · 5 bits -> 63 bytes + norm
      67
      >>> process = factory.create(tff.types.to_type([(np.float32, (10, 10))]),
      ...                          tff.TensorType(np.float32))

    References:
      Reisizadeh, Mokhtari, Hassani, Jadbabaie, Pedarsani. "FedPAQ: A
      Communication-Efficient Federated Learning Method with Periodic Averaging
      and Quantization", AISTATS 2020.
    """

    def __init__(
        self,
        levels: int,
        *,
        seed: int = 0,
        inner_factory: tff.aggregators.WeightedAggregationFactory | None = None,
        requantize: bool = False,
    ):
        self._levels = check_int("levels", levels, 1)
        if not isinstance(requantize, bool | np.bool_):
            raise TypeError(
                "Invalid value for argument `requantize`. Expected True or False. "
                f"Received: requantize={requantize!r}"
            )
        self._requantize = bool(requantize)
        self._seed = check_int("seed", seed, -(2**63))
        if self._seed >= 2**63:
            raise ValueError(
                "Invalid value for argument `seed`. Expected an int that fits in int64. "
                f"Received: seed={seed!r}"
            )
        inner_factory = check_weighted_factory("inner_factory", inner_factory)
        self._inner_factory = inner_factory

    @property
    def levels(self) -> int:
        """s, the number of quantization levels."""
        return self._levels

    @property
    def seed(self) -> int:
        """The run seed of the stateless RNG."""
        return self._seed

    @property
    def requantize(self) -> bool:
        """Whether the server quantizes the aggregate again."""
        return self._requantize

    @property
    def bits_per_coordinate(self) -> int:
        """Bits per coordinate of the fixed-width code: ceil(log2(s + 1)) + 1 (sign)."""
        return bits_per_coordinate(self._levels)

    def encoded_bytes(self, shape: Sequence[int], dtype: Any) -> int:
        """Bytes one client sends for one quantized tensor.

        Args:
          shape: The tensor's fully defined shape.
          dtype: The tensor's floating dtype (the code does not depend on it: the
            norm is always sent as float32).

        Returns:
          ``ceil(size · bits_per_coordinate / 8) + 4``.

        Raises:
          TypeError: If `dtype` is not floating.
          ValueError: If `shape` is not fully defined.
        """
        if not tf.as_dtype(dtype).is_floating:
            raise TypeError(
                "QuantizationFactory.encoded_bytes: expected a floating dtype. "
                f"Received: dtype={dtype!r}"
            )
        dims = tf.TensorShape(shape)
        if not dims.is_fully_defined():
            raise ValueError(
                "QuantizationFactory.encoded_bytes: expected a fully defined shape. "
                f"Received: shape={shape!r}"
            )
        size = int(np.prod(dims.as_list(), dtype=np.int64))
        return math.ceil(size * self.bits_per_coordinate / 8) + _NORM_BYTES

    def create(
        self, value_type: tff.types.Type, weight_type: tff.types.Type
    ) -> tff.templates.AggregationProcess:
        """The process quantizing each client's update of `value_type`.

        `value_type` must be a structure of float tensors with fully defined
        shapes and `weight_type` a float tensor type (TypeError otherwise). The
        process's state is a `QuantizationState`; its measurements are
        ``OrderedDict(quantization=OrderedDict(levels, bits_per_coordinate,
        requantized), inner=...)``.
        """
        value_type, weight_type = check_aggregation_types(
            "QuantizationFactory", value_type, weight_type
        )
        _runtime.install()  # TFF computations follow: guard its worker processes
        inner_process = self._inner_factory.create(value_type, weight_type)
        levels = self._levels
        bits = self.bits_per_coordinate
        seed = self._seed

        def init_state(inner):
            return QuantizationState(
                round_num=tf.constant(0, tf.int32),
                seed=tf.constant(seed, tf.int64),
                inner=inner,
            )

        init_fn, state_type, get_inner = state_around_inner(inner_process, init_state)
        inner_state_type = inner_process.initialize.type_signature.result.member

        @tff.tensorflow.computation(state_type)
        def get_round_key(state):
            return tf.stack([state.seed, tf.cast(state.round_num, tf.int64)])

        @tff.tensorflow.computation(value_type, tff.TensorType(np.int64, [2]))
        def quantize_client(value, round_key):
            return quantize_update(value, levels, round_key)

        inner_result_type = inner_process.next.type_signature.result.result.member
        requantize = self._requantize

        @tff.tensorflow.computation(state_type, inner_state_type, inner_result_type)
        def server_update(state, inner_state, result):
            if requantize:
                round_key = tf.stack([state.seed, tf.cast(state.round_num, tf.int64)])
                result = quantize_aggregate(result, levels, round_key)
            new_state = QuantizationState(
                round_num=state.round_num + 1, seed=state.seed, inner=inner_state
            )
            measurements = collections.OrderedDict(
                levels=tf.constant(levels, tf.int32),
                bits_per_coordinate=tf.constant(bits, tf.int32),
                requantized=tf.constant(requantize),
            )
            return new_state, result, measurements

        @tff.federated_computation(*server_and_clients(state_type, value_type, weight_type))
        def next_fn(state, value, weight):
            # Client computation: quantize with a seed from [seed, round] and the update.
            round_key = tff.federated_broadcast(tff.federated_map(get_round_key, state))
            quantized = tff.federated_map(quantize_client, (value, round_key))
            # Inner aggregation of the quantized updates.
            inner_output = inner_process.next(
                tff.federated_map(get_inner, state), quantized, weight
            )
            # Server computation: re-quantize (if asked), advance the round counter.
            new_state, result, quantization_measurements = tff.federated_map(
                server_update, (state, inner_output.state, inner_output.result)
            )
            # Output preparation.
            measurements = tff.federated_zip(
                collections.OrderedDict(
                    quantization=quantization_measurements, inner=inner_output.measurements
                )
            )
            return tff.templates.MeasuredProcessOutput(
                state=new_state, result=result, measurements=measurements
            )

        return tff.templates.AggregationProcess(init_fn, next_fn)
