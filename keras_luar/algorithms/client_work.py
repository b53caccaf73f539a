"""The client work of FedAvg, FedProx and FedPart as a TFF `ClientWorkProcess`, and a builder.

`build_client_work` is TFF's model-delta client work (each sampled client
trains τ steps from the broadcast weights and reports ``initial − trained``)
built on `keras_luar.algorithms.local_training`, which adds a correctly signed
FedProx term and an optional per-round schedule of trainable variables.
`build_learning_process` composes it with TFF's broadcast, any aggregation
factory (FedAvg's mean, `LuarFactory`, quantization) and TFF's server
optimizer finalizer, exactly as `tff.learning.algorithms.build_weighted_fed_avg`
does, so the result is an ordinary `tff.learning.templates.LearningProcess`.

Non-trainable variables (BatchNorm moving statistics) are never left at the
values a model starts with. ``bn_statistics="average"`` (the default) makes the
weighted mean of the clients' statistics after local training the global
model's, every round, as the official FedLUAR code does (TFF's own builders
keep the server's values, so a global model of theirs evaluates with the
initial statistics). ``bn_statistics="local"`` keeps each client's statistics
in that client (Fling's FedPart); see `keras_luar.algorithms.local_statistics`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._types import BnStatistics, ClientWeighting
from keras_luar._validation import check_bn_statistics, check_weighting
from keras_luar.algorithms.local_training import (
    all_finite,
    build_local_training,
    model_types,
    optimizer_hparams,
    zeros_if,
)
from keras_luar.algorithms.stateful import with_next
from keras_luar.algorithms.weighting import (
    client_data_type,
    client_weight,
    unpack_client_data,
)

TrainableSchedule = Callable[[tf.Tensor], tf.Tensor]
_STATISTICS_TAG = 0x57A7  # folded into the round key of the statistics' quantization


def check_proximal_strength(value: Any) -> float:
    """Returns μ as a float; raises ValueError for a negative one."""
    if value < 0:
        raise ValueError(
            "Invalid value for argument `proximal_strength`. Expected a float >= 0. "
            f"Received: proximal_strength={value!r}"
        )
    return float(value)


def round_plan_fn(trainable_schedule: TrainableSchedule | None, num_trainable: int):
    """``plan(hparams, round_num)``: what every client needs to know about the round."""

    def plan(hparams, round_num):
        if trainable_schedule is None:
            mask = tf.ones([num_trainable], tf.bool)
        else:
            mask = tf.reshape(tf.cast(trainable_schedule(round_num), tf.bool), [num_trainable])
        return collections.OrderedDict(hparams=hparams, trainable=mask)

    return plan


def local_update_fn(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    *,
    proximal_strength: float,
    client_weighting: str,
    scheduled: bool,
    num_trainable: int,
):
    """The client step shared by the processes here, to call inside a TFF computation.

    Returns ``update(plan, initial_weights, data)`` →
    ``(update, weight, trained, metrics)``: the update ``initial − trained``
    of the trainable variables (zeros if it is not finite), its weight (0 if it
    is not finite), the trained `ModelWeights` and the model's unfinalized
    metrics.
    """

    def update(plan, initial_weights, data):
        batches, data_size = unpack_client_data(data, client_weighting)
        _, train = build_local_training(model_fn, optimizer, proximal_strength=proximal_strength)
        mask = tuple(tf.unstack(plan["trainable"], num=num_trainable)) if scheduled else None
        trained, num_examples, metrics = train(initial_weights, batches, plan["hparams"], mask)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, trained.trainable)
        finite = all_finite(delta)
        delta = zeros_if(tf.logical_not(finite), delta)
        weight = client_weight(client_weighting, num_examples, data_size)
        weight = tf.where(finite, weight, 0.0)
        return delta, weight, trained, metrics

    return update


def client_round(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    trainable_schedule: TrainableSchedule | None,
    num_trainable: int,
    *,
    proximal_strength: float,
    client_weighting: str,
):
    """What a round's clients share: ``(hparams, plan, update)``.

    `hparams` are the optimizer's initial hyperparameters, `plan` is
    `round_plan_fn`'s ``plan(hparams, round_num)`` and `update` is
    `local_update_fn`'s ``update(plan, initial_weights, data)``.
    """
    update = local_update_fn(
        model_fn,
        optimizer,
        proximal_strength=proximal_strength,
        client_weighting=client_weighting,
        scheduled=trainable_schedule is not None,
        num_trainable=num_trainable,
    )
    plan = round_plan_fn(trainable_schedule, num_trainable)
    return optimizer_hparams(optimizer), plan, update


def statistics_upload(
    trained: Any, initial: Any, weight: tf.Tensor, quantizer: Any, round_key: tf.Tensor | None
) -> tuple[list, tf.Tensor]:
    """A client's weighted statistics change for the server's mean: (w·d_i, w).

    d_i = s_i − s is the change of the client's statistics from the broadcast
    ones s during training; the server adds the weighted mean of the d_i to s,
    which gives the weighted mean of the s_i. With a quantizer (FedPAQ) the
    client sends Q(d_i), as the official FedPAQ code does. A client whose
    statistics are not finite (or whose weight is 0) sends zeros with weight 0.
    """
    deltas = [s - s0 for s, s0 in zip(trained, initial, strict=True)]
    kept = tf.logical_and(weight > 0, all_finite(deltas))
    deltas = zeros_if(tf.logical_not(kept), deltas)
    if quantizer is not None:
        from keras_luar.aggregators.quantization import quantize_update

        deltas = quantize_update(deltas, quantizer.levels, round_key)
    weight = tf.where(kept, weight, 0.0)
    return [tf.where(kept, weight * d, tf.zeros_like(d)) for d in deltas], weight


def build_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    *,
    proximal_strength: float = 0.0,
    client_weighting: ClientWeighting = "round_examples",
    trainable_schedule: TrainableSchedule | None = None,
    bn_statistics: Literal["average", "none"] = "average",
    statistics_quantizer: Any = None,
) -> tff.learning.templates.ClientWorkProcess:
    """Builds the client work: local training from the broadcast weights.

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel`.
      optimizer: The client optimizer; fresh state every round.
      proximal_strength: FedProx's μ >= 0 (0: FedAvg's local objective).
      client_weighting: How a client's update is weighted
        (`keras_luar.algorithms.weighting`): ``"uniform"``, ``"example"``
        (its data set size; the client data is then a `SizedClientData`) or
        ``"round_examples"`` (the examples it trained on this round, TFF's
        default). A client whose update is not finite is zeroed and weighted 0.
      trainable_schedule: Optional function of the round number (an int32
        tensor, counted by the client work from 0) returning a boolean vector
        with one entry per trainable variable: the variables clients may train
        that round. The others keep their broadcast values, so their update is
        exactly zero.
      bn_statistics: ``"average"``: the clients' non-trainable variables after
        training (BatchNorm moving statistics) are averaged with the clients'
        weights over the clients whose training stayed finite; the change from
        the broadcast values is kept in the state under
        ``statistics_delta`` (`build_learning_process` adds it to the global
        model's). ``"none"``: they are not uploaded.
      statistics_quantizer: Optional `keras_luar.aggregators.QuantizationFactory`:
        clients then send the quantized change of their statistics (and the
        server quantizes the mean again if the quantizer re-quantizes), as the
        official FedPAQ code does.

    Returns:
      A `tff.learning.templates.ClientWorkProcess` whose state is
      ``OrderedDict(hparams=<optimizer hparams>, round_num=<int32>)`` (plus
      ``statistics_delta`` when averaging) and whose measurements are
      ``OrderedDict(train=<model metrics>)``.

    Raises:
      ValueError: If `proximal_strength` < 0, or `client_weighting` or
        `bn_statistics` is unknown.
    """
    check_weighting("client_weighting", client_weighting)
    proximal_strength = check_proximal_strength(proximal_strength)
    check_bn_statistics(bn_statistics, ("average", "none"), "build_client_work")
    initial_weights, weights_type, batches_type, aggregate_metrics = model_types(model_fn)
    data_type = client_data_type(batches_type, client_weighting)
    num_trainable = len(weights_type.trainable)
    average_bn = bn_statistics == "average" and len(weights_type.non_trainable) > 0
    hparams, plan_fn, local_update = client_round(
        model_fn,
        optimizer,
        trainable_schedule,
        num_trainable,
        proximal_strength=proximal_strength,
        client_weighting=client_weighting,
    )
    quantizer = statistics_quantizer
    seed = 0 if quantizer is None else quantizer.seed

    def make_state(hparams, round_num, delta=None):
        state = collections.OrderedDict(hparams=hparams, round_num=round_num)
        if average_bn:
            state["statistics_delta"] = delta
        return state

    @tff.tensorflow.computation()
    def init_state():
        zeros = None
        if average_bn:
            zeros = [tf.zeros_like(t) for t in initial_weights().non_trainable]
        return make_state(
            tf.nest.map_structure(tf.constant, hparams), tf.constant(0, tf.int32), zeros
        )

    state_type = init_state.type_signature.result
    hparams_type = state_type.hparams

    @tff.federated_computation()
    def init_fn():
        return tff.federated_eval(init_state, tff.SERVER)

    @tff.tensorflow.computation(state_type)
    def get_hparams(state):
        return state["hparams"]

    @tff.tensorflow.computation(state_type, hparams_type)
    def set_hparams(state, new_hparams):
        return make_state(new_hparams, state["round_num"], state.get("statistics_delta"))

    def statistics_key(state):
        # [seed, round] folded with a tag of its own: the statistics' quantization
        # noise is drawn apart from the updates' (QuantizationFactory's keys).
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(state["round_num"], tf.int64)])
        return tf.random.experimental.stateless_fold_in(key, tf.constant(_STATISTICS_TAG, tf.int64))

    @tff.tensorflow.computation(state_type)
    def round_plan(state):
        plan = plan_fn(state["hparams"], state["round_num"])
        plan["round_key"] = statistics_key(state)
        return plan

    @tff.tensorflow.computation(state_type)
    def advance(state):
        return make_state(state["hparams"], state["round_num"] + 1, state.get("statistics_delta"))

    plan_type = round_plan.type_signature.result

    @tff.tensorflow.computation(plan_type, weights_type, data_type)
    def client_update(plan, initial_weights, data):
        update, weight, trained, metrics = local_update(plan, initial_weights, data)
        result = tff.learning.templates.ClientResult(update=update, update_weight=weight)
        if not average_bn:
            return result, metrics
        stats = statistics_upload(
            trained.non_trainable,
            initial_weights.non_trainable,
            weight,
            quantizer,
            plan["round_key"],
        )
        return result, metrics, stats

    if average_bn:
        stats_type = client_update.type_signature.result[2]

        @tff.tensorflow.computation(state_type, stats_type)
        def mean_statistics(state, summed):
            total, weight = summed
            # The weighted mean change; `_with_averaged_statistics` adds it to the
            # global statistics. No client kept: the sum is 0 and nothing changes.
            delta = [tf.math.divide_no_nan(t, weight) for t in total]
            if quantizer is not None and quantizer.requantize:
                from keras_luar.aggregators.quantization import quantize_aggregate

                delta = quantize_aggregate(delta, quantizer.levels, statistics_key(state))
            return make_state(state["hparams"], state["round_num"], delta)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, data):
        plan = tff.federated_broadcast(tff.federated_map(round_plan, state))
        outputs = tff.federated_map(client_update, (plan, weights, data))
        result, model_metrics = outputs[0], outputs[1]
        measurements = tff.federated_zip(
            collections.OrderedDict(train=aggregate_metrics(model_metrics))
        )
        new_state = state
        if average_bn:
            summed = tff.federated_sum(outputs[2])
            new_state = tff.federated_map(mean_statistics, (state, summed))
        new_state = tff.federated_map(advance, new_state)
        return tff.templates.MeasuredProcessOutput(new_state, result, measurements)

    return tff.learning.templates.ClientWorkProcess(
        init_fn, next_fn, get_hparams_fn=get_hparams, set_hparams_fn=set_hparams
    )


def build_learning_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer | None = None,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None = None,
    proximal_strength: float = 0.0,
    client_weighting: ClientWeighting = "round_examples",
    trainable_schedule: TrainableSchedule | None = None,
    bn_statistics: BnStatistics = "average",
    statistics_quantizer: Any = None,
) -> Any:
    """Composes FedAvg-style training with keras_luar's client work.

    With ``proximal_strength=0``, no schedule and a model without
    non-trainable variables this is
    `tff.learning.algorithms.build_weighted_fed_avg`; with μ > 0 it is FedProx
    (with the proximal gradient's correct sign); a schedule gives FedPart's
    partial training. Any weighted aggregation factory fits, e.g.
    `keras_luar.LuarFactory` (then wrap the result with
    `keras_luar.with_global_weight_norms`).

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel`.
      client_optimizer: A `tff.learning.optimizers.Optimizer` for clients.
      server_optimizer: A `tff.learning.optimizers.Optimizer` applied to the
        aggregated update; None is SGD with learning rate 1 (x_{t+1} = x_t + Δ̂).
      model_aggregator: A weighted aggregation factory; None is TFF's mean.
      proximal_strength: FedProx's μ >= 0.
      client_weighting: ``"uniform"``, ``"example"`` (a client's data set
        size; each client's data is then a
        `keras_luar.algorithms.weighting.SizedClientData`) or
        ``"round_examples"`` (TFF's default, the examples trained this round).
      trainable_schedule: See `build_client_work`.
      bn_statistics: ``"average"``: after every round the global model's
        non-trainable variables (BatchNorm moving statistics) become the
        clients' weighted mean after training, as the official FedLUAR code
        does. ``"local"``: every client keeps its own statistics, which persist
        between its rounds (Fling's FedPart); the process then has per-client
        state (see `keras_luar.algorithms.local_statistics`).
      statistics_quantizer: See `build_client_work` (``"average"`` only).

    Returns:
      A `tff.learning.templates.LearningProcess`; with ``bn_statistics="local"``
      and a model with non-trainable variables, a
      `keras_luar.algorithms.StatefulClientProcess`.

    Raises:
      ValueError: For a negative μ, an unknown weighting or statistics rule.

    Examples:
      >>> process = build_learning_process(  # doctest: +SKIP
      ...     model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.05),
      ...     proximal_strength=0.001, model_aggregator=keras_luar.LuarFactory(2))
    """
    check_bn_statistics(bn_statistics)
    initial_weights, weights_type, _, _ = model_types(model_fn)
    if server_optimizer is None:
        server_optimizer = tff.learning.optimizers.build_sgdm(1.0)
    model_aggregator = model_aggregator or tff.aggregators.MeanFactory()
    if bn_statistics == "local" and weights_type.non_trainable:
        from keras_luar.algorithms.local_statistics import build_with_local_statistics

        return build_with_local_statistics(
            model_fn,
            client_optimizer=client_optimizer,
            server_optimizer=server_optimizer,
            model_aggregator=model_aggregator,
            proximal_strength=proximal_strength,
            client_weighting=client_weighting,
            trainable_schedule=trainable_schedule,
        )
    client_work = build_client_work(
        model_fn,
        client_optimizer,
        proximal_strength=proximal_strength,
        client_weighting=client_weighting,
        trainable_schedule=trainable_schedule,
        bn_statistics="average",
        statistics_quantizer=statistics_quantizer,
    )
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    process = tff.learning.templates.compose_learning_process(
        initial_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )
    if not weights_type.non_trainable:
        return process
    return _with_averaged_statistics(process)


def _with_averaged_statistics(process):
    """After each round, the clients' mean change of the statistics is added to the global ones."""
    state_type = process.initialize.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def adopt(state):
        weights = state.global_model_weights
        stats = [
            s + d
            for s, d in zip(
                weights.non_trainable, state.client_work["statistics_delta"], strict=True
            )
        ]
        weights = tff.learning.models.ModelWeights(
            trainable=weights.trainable, non_trainable=type(weights.non_trainable)(stats)
        )
        return state._replace(global_model_weights=weights)

    param = process.next.type_signature.parameter

    @tff.federated_computation(param[0], param[1])
    def next_fn(state, data):
        output = process.next(state, data)
        return tff.learning.templates.LearningProcessOutput(
            tff.federated_map(adopt, output.state), output.metrics
        )

    return with_next(process, next_fn)
