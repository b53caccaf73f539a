"""FedLUAR as a TFF aggregation factory: layer-wise update aggregation with recycling.

`LuarFactory` is a `tff.aggregators.WeightedAggregationFactory`. Use it as the
``model_aggregator`` of TFF's learning-process builders, then wrap the
process with `with_global_weight_norms` so that the scores see the norms of
the global weights:

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=..., model_aggregator=LuarFactory(2))
    process = keras_luar.with_global_weight_norms(process)

One round of the aggregator (t counts from 0):

1. Server: R_t, the recycle mask drawn at the end of round t-1 (empty in
   round 0), is broadcast to the clients.
2. Clients: the candidates in R_t are zero-filled and not counted as uploaded
   (TFF types are static, so the simulation carries zeros where a deployment
   would send nothing). A client whose update holds NaN/Inf anywhere, or whose
   weight is 0, is dropped: its whole update is zeroed and weighted 0.
3. Inner aggregation (default `tff.aggregators.MeanFactory`) of what was sent.
4. Server: recycled candidates get their stored update U_l unchanged (neither
   U_l nor the score s_l is refreshed, so scores go stale and a layer may be
   recycled again). Every other candidate takes the fresh mean, which is
   stored as U_l with the score s_l = ||U_l|| / (||x_{t,l}|| + 1e-6). Then
   R_{t+1} is drawn (`keras_luar.scoring.sample_recycle_mask`).

With ``upload_budget=b`` instead of δ (an extension of this library, not the
paper's method), R_{t+1} is the shortest prefix of the same p ∝ 1/s draw
without replacement (`keras_luar.scoring.budget_recycle_mask`) that brings
round t+1's upload per client down to what is left of the budget,
b·(t+2)·F − (bytes sent so far), with F what FedAvg sends per client and
round. Round 0 recycles nothing (no update is stored yet), so the cumulative
upload is brought to at most b·F per round as soon as the layer sizes allow
and then stays within one layer of it.

The inner factory may be weighted or unweighted (TFF's
`DifferentiallyPrivateFactory` or a mean over `SecureSumFactory`, say): an
unweighted one needs ``client_weighting="uniform"``. The inner factory only
ever sees what is sent: clipping, zeroing and noise apply to the sent layers,
and a recycled layer re-applies an aggregate that was already privatized
(post-processing). TFF 0.87's C++ runtime cannot run secure summation at all;
`FederatedTrainer` simulates it on both backends (as TFF's test backend does),
and in TFF's own builders run the process under TFF's test context
(``tff.backends.test.set_sync_test_cpp_execution_context()``) or inside
``keras_luar.backends.execution(...)``.

The sign of the update does not matter: TFF's client work reports
``initial - trained`` weights, and norms and recycling are sign-agnostic.

References:
  Kim, Kang, Lee. "Layer-wise Update Aggregation with Recycling for
  Communication-Efficient Federated Learning", 2025 (Algorithms 1 and 2).
"""

from __future__ import annotations

import collections
import sys
from typing import Any, Literal, NamedTuple

import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import layers, scoring
from keras_luar._validation import (
    check_float,
    check_inner_factory,
    check_int,
)
from keras_luar.aggregators.masked import MaskedParts, MaskedUploadFactory, variable_costs

_WEIGHTINGS = ("uniform", "example")  # "example": the weights the client work passes in
_MISSING_NORMS_MESSAGE = (
    "keras_luar WARNING: LuarFactory got no global weight norms this round, so "
    "layer scores fall back to ||update|| alone (not FedLUAR's ||update||/||weights||). "
    "Wrap the learning process with keras_luar.with_global_weight_norms(process)."
)


class LuarState(NamedTuple):
    """Server state of `LuarFactory` (L = number of candidate layers)."""

    round_num: Any  # int32 []: rounds aggregated so far
    seed: Any  # int64 []: run seed; round t draws with the stateless seed [seed, t]
    recycle_mask: Any  # bool [L]: R_t, the candidates recycled in the coming round
    scores: Any  # float32 [L]: s_l from each candidate's last fresh aggregation
    last_updates: Any  # tuple of L tensors: U_l, each candidate's last fresh aggregate
    aggregation_counts: Any  # int64 [L]: rounds in which each candidate was aggregated fresh
    weight_norms: Any  # float32 [L]: ||x_t,l||, written before each round; -1 = not written
    uploaded_bytes: Any  # float64 []: bytes one client sent over the rounds so far
    inner: Any  # state of the inner aggregation process


class LuarFactory(MaskedUploadFactory):
    """FedLUAR's aggregation step as a TFF weighted aggregation factory.

    Args:
      num_recycled_layers: δ, the number of candidate layers recycled per round
        (0 reproduces the inner aggregation, i.e. FedAvg, exactly). Must be
        smaller than the number of candidates L of the value type. Give
        either δ or `upload_budget`.
      upload_budget: b in (0, 1), instead of δ: the cumulative upload is held
        at b times FedAvg's, recycling as many layers each round as the budget
        asks (see the module docstring; an extension, not the paper's method).
      seed: Seed of the stateless RNG that draws the recycled layers.
      inner_factory: A TFF aggregation factory, weighted or unweighted (e.g.
        `tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(...)`,
        `tff.learning.robust_aggregator()`, `tff.learning.secure_aggregator()`),
        that aggregates the sent part; defaults to
        `tff.aggregators.MeanFactory()`. If it has an
        ``encoded_bytes(shape, dtype)`` method (as `QuantizationFactory` has),
        the ``upload_bytes`` measurements count those bytes for each sent
        tensor; under a `SecureSumFactory` each float counts 4 bytes (its
        32-bit integer encoding); otherwise each number counts its dtype's size.
      client_weighting: ``"uniform"`` averages client updates with equal
        weights, as the official FedLUAR code does; ``"example"`` uses the
        weights the client work passes in: with TFF's own builders the
        number of examples a client trained on in the round (TFF's default
        client weighting), with `keras_luar.algorithms.build_learning_process`
        the weighting it was given (e.g. each client's data set size).
        Clients with weight 0 are dropped either way. An unweighted
        `inner_factory` needs ``"uniform"``.
      variable_names: Optional names for the leaves of the value type, in
        `tf.nest.flatten` order (e.g. ``[v.name for v in
        model.trainable_variables]``); they name the candidates in
        `candidate_names` and in reports.

    Raises:
      TypeError: If `num_recycled_layers` or `seed` is not an int, neither δ
        nor `upload_budget` is given, or `inner_factory` is not a TFF
        aggregation factory.
      ValueError: If `num_recycled_layers` < 0, both δ and `upload_budget`
        are given, `upload_budget` is not in (0, 1), `client_weighting` is
        unknown, or ``"example"`` with an unweighted `inner_factory`.
        `create` raises ValueError if δ >= L, L = 0, or the budget is below
        what the always-sent variables cost.

    Examples:
      >>> import numpy as np, tensorflow_federated as tff
      >>> import keras_luar
      >>> factory = keras_luar.LuarFactory(1)
      >>> value_type = tff.types.to_type([(np.float32, (3, 2)), (np.float32, (2,)),
      ...                                 (np.float32, (2, 2))])
      >>> process = factory.create(value_type, tff.TensorType(np.float32))
      >>> factory.candidate_names
      ('trainable/0', 'trainable/2')

    References:
      Kim, Kang, Lee, "Layer-wise Update Aggregation with Recycling for
      Communication-Efficient Federated Learning", 2025.
    """

    def __init__(
        self,
        num_recycled_layers: int | None = None,
        *,
        upload_budget: float | None = None,
        seed: int = 0,
        inner_factory: Any = None,
        client_weighting: Literal["uniform", "example"] = "uniform",
        variable_names: list[str] | None = None,
    ):
        if num_recycled_layers is None and upload_budget is None:
            raise TypeError(
                "LuarFactory needs `num_recycled_layers` (δ) or `upload_budget`. Received: neither"
            )
        if num_recycled_layers is not None and upload_budget is not None:
            raise ValueError(
                "Invalid value for argument `upload_budget`. Expected None when "
                "`num_recycled_layers` is given (the budget decides how many layers are "
                f"recycled). Received: upload_budget={upload_budget!r}, "
                f"num_recycled_layers={num_recycled_layers!r}"
            )
        self._budget = None
        if upload_budget is not None:
            self._budget = check_float("upload_budget", upload_budget, 0.0, 1.0, open_high=True)
            if self._budget == 0.0:
                raise ValueError(
                    "Invalid value for argument `upload_budget`. Expected a float in (0, 1). "
                    f"Received: upload_budget={upload_budget!r}"
                )
        self._num_recycled = (
            0 if num_recycled_layers is None
            else check_int("num_recycled_layers", num_recycled_layers, 0)
        )  # fmt: skip
        self._seed = check_int("seed", seed, -(2**63))
        inner_factory, weighted = check_inner_factory("inner_factory", inner_factory)
        if client_weighting not in _WEIGHTINGS:
            raise ValueError(
                "Invalid value for argument `client_weighting`. Expected one of "
                f"{_WEIGHTINGS}. Received: client_weighting={client_weighting!r}"
            )
        if not weighted and client_weighting != "uniform":
            raise ValueError(
                "Invalid value for argument `client_weighting`. Expected 'uniform' with the "
                f"unweighted inner_factory {type(inner_factory).__name__}, which takes no "
                "client weights. Received: client_weighting='example'"
            )
        self._inner_factory = inner_factory
        self._client_weighting = client_weighting
        self._variable_names = None if variable_names is None else list(variable_names)
        self._layout: layers.ModelLayout | None = None

    @property
    def num_recycled_layers(self) -> int:
        """δ, the number of layers recycled per round."""
        return self._num_recycled

    @property
    def upload_budget(self) -> float | None:
        """b, the upload budget as a fraction of FedAvg's upload, or None (δ is used)."""
        return self._budget

    @property
    def layout(self) -> layers.ModelLayout:
        """The candidate layout of the last `create` call."""
        if self._layout is None:
            raise RuntimeError("LuarFactory.layout is known only after create() has run.")
        return self._layout

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """Names of the candidates; the ``recycled`` measurement is aligned with them."""
        return self.layout.candidate_names

    def _parts(self, value_type: tff.types.Type) -> MaskedParts:
        layout = layers.describe_weights_type(value_type, names=self._variable_names)
        if layout.num_candidates == 0:
            raise ValueError(
                "LuarFactory.create: the value type has no recycling candidate (no "
                f"trainable float tensor of rank >= 2). Received: value_type={value_type}"
            )
        if self._num_recycled >= layout.num_candidates:
            raise ValueError(
                "Invalid value for argument `num_recycled_layers`. Expected an int "
                f"smaller than the model's number of candidate layers L={layout.num_candidates} "
                f"({', '.join(layout.candidate_names)}). "
                f"Received: num_recycled_layers={self._num_recycled}"
            )
        sizes, nbytes = variable_costs(value_type, self._inner_factory)
        specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type))
        fedavg_bytes = float(sum(s.shape.num_elements() * s.dtype.size for s in specs))
        cand_bytes = [float(nbytes[i]) for i in layout.candidate_indices]
        always_sent = float(nbytes.sum()) - sum(cand_bytes)
        budget = self._budget
        if budget is not None and budget * fedavg_bytes <= always_sent:
            raise ValueError(
                "Invalid value for argument `upload_budget`. Expected more than the share of "
                f"the upload that is never recycled ({always_sent / fedavg_bytes:.4f}: the "
                "variables that are no candidate, e.g. biases, are sent every round). "
                f"Received: upload_budget={budget!r}"
            )
        self._layout = layout
        cand_idx = layout.candidate_indices
        num_layers = layout.num_candidates
        num_variables = len(layout.trainable)
        cand_specs = [(tf.as_dtype(v.dtype), v.shape) for v in layout.candidates]
        total_size = float(layout.trainable_size)
        num_recycled, seed = self._num_recycled, self._seed
        full_bytes = float(nbytes.sum())
        # The candidates' positions among all variables, as a scatter index.
        positions = [[i] for i in cand_idx]

        def init_state(inner):
            return LuarState(
                round_num=tf.constant(0, tf.int32),
                seed=tf.constant(seed, tf.int64),
                recycle_mask=tf.zeros([num_layers], tf.bool),
                scores=tf.zeros([num_layers], tf.float32),
                last_updates=tuple(tf.zeros(shape, dtype) for dtype, shape in cand_specs),
                aggregation_counts=tf.zeros([num_layers], tf.int64),
                weight_norms=-tf.ones([num_layers], tf.float32),
                uploaded_bytes=tf.constant(0.0, tf.float64),
                inner=inner,
            )

        def sent_mask(state):
            # Every variable is sent but the recycled candidates.
            recycled = tf.scatter_nd(
                tf.constant(positions, tf.int32), state.recycle_mask, [num_variables]
            )
            return tf.logical_not(recycled)

        def server_update(state, inner_state, flat, upload):
            mask = state.recycle_mask
            fresh = tf.logical_and(tf.logical_not(mask), upload.any_valid)
            norms_missing = tf.reduce_any(state.weight_norms < 0)
            # tf.equal, not `==`: in TFF's graph context `==` compares Python identity.
            warned = tf.cond(
                tf.logical_and(norms_missing, tf.equal(state.round_num, 0)),
                _print_missing_norms_warning,
                lambda: tf.constant(False),
            )
            weight_norms = tf.where(
                norms_missing, tf.ones_like(state.weight_norms), state.weight_norms
            )
            fresh_means = [flat[i] for i in cand_idx]
            fresh_scores = scoring.layer_scores(scoring.frobenius_norms(fresh_means), weight_norms)
            scores = tf.where(fresh, fresh_scores, state.scores)
            flat = list(flat)
            last_updates = []
            for j, i in enumerate(cand_idx):
                stored = state.last_updates[j]
                last_updates.append(tf.where(fresh[j], flat[i], stored))
                flat[i] = tf.where(mask[j], stored, flat[i])
            counts = state.aggregation_counts + tf.cast(fresh, tf.int64)
            uploaded = state.uploaded_bytes + tf.cast(upload.bytes_per_client, tf.float64)
            round_seed = scoring.round_seed(state.seed, state.round_num)
            if budget is None:
                next_mask = scoring.sample_recycle_mask(
                    scores, num_recycled, round_seed, eligible=counts > 0
                )
            else:
                # Round t+1 may send what is left of b·(t+2)·F; it must leave `need` at home.
                rounds_after = tf.cast(state.round_num, tf.float64) + 2.0
                need = full_bytes - (budget * rounds_after * fedavg_bytes - uploaded)
                next_mask = scoring.budget_recycle_mask(
                    scores, tf.constant(cand_bytes, tf.float64), need, round_seed, counts > 0
                )
            new_state = LuarState(
                round_num=state.round_num + 1,
                seed=state.seed,
                recycle_mask=next_mask,
                scores=scores,
                last_updates=tuple(last_updates),
                aggregation_counts=counts,
                weight_norms=-tf.ones_like(state.weight_norms),
                uploaded_bytes=uploaded,
                inner=inner_state,
            )
            # `warned` implies `norms_missing`; or-ing them ties the print to an output.
            norms_missing = tf.logical_or(norms_missing, warned)
            luar = collections.OrderedDict(
                recycled=mask,
                num_recycled=tf.reduce_sum(tf.cast(mask, tf.int32)),
                num_clients=upload.num_clients,
                num_dropped_clients=upload.num_clients - upload.num_valid,
                upload_params_per_client=upload.params_per_client,
                upload_params=upload.params,
                upload_bytes_per_client=upload.bytes_per_client,
                upload_bytes=upload.bytes,
                upload_fraction=tf.cast(upload.params_per_client, tf.float64) / total_size,
                cumulative_upload_fraction=uploaded
                / (fedavg_bytes * tf.cast(state.round_num + 1, tf.float64)),
                scores=scores,
                aggregation_counts=counts,
                weight_norms_missing=norms_missing,
            )
            return new_state, flat, collections.OrderedDict(luar=luar)

        return MaskedParts(
            init_state, sent_mask, server_update, uniform=self._client_weighting == "uniform"
        )


def _print_missing_norms_warning():
    # Runs inside TFF's worker: the message goes to the worker's stderr, which TFF
    # connects to ours. The `weight_norms_missing` measurement says the same.
    op = tf.print(_MISSING_NORMS_MESSAGE, output_stream=sys.stderr)
    with tf.control_dependencies([op]):
        return tf.constant(True)
