"""The client work of FedAvg, FedProx and FedPart as a TFF `ClientWorkProcess`, and a builder.

`build_client_work` is TFF's model-delta client work (each sampled client
trains τ steps from the broadcast weights and reports ``initial − trained``)
built on `keras_luar.algorithms.local_training`, which adds a correctly signed
FedProx term and an optional per-round schedule of trainable variables.
`build_learning_process` composes it with TFF's broadcast, any aggregation
factory (FedAvg's mean, `LuarFactory`, quantization) and TFF's server
optimizer finalizer, exactly as `tff.learning.algorithms.build_weighted_fed_avg`
does, so the result is an ordinary `tff.learning.templates.LearningProcess`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar.algorithms.local_training import (
    all_finite,
    build_local_training,
    model_types,
    zeros_if,
)

ClientWeighting = Literal["uniform", "example"]
BnStatistics = Literal["average", "local"]
TrainableSchedule = Callable[[tf.Tensor], tf.Tensor]


def build_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    *,
    proximal_strength: float = 0.0,
    client_weighting: ClientWeighting = "example",
    trainable_schedule: TrainableSchedule | None = None,
    bn_statistics: BnStatistics = "local",
) -> tff.learning.templates.ClientWorkProcess:
    """Builds the client work: local training from the broadcast weights.

    Args:
      model_fn: A no-argument callable returning a new
        `tff.learning.models.VariableModel`.
      optimizer: The client optimizer; fresh state every round.
      proximal_strength: FedProx's μ >= 0 (0: FedAvg's local objective).
      client_weighting: ``"example"`` weights a client's update by its number
        of examples, ``"uniform"`` by 1. A client whose update is not finite is
        zeroed and weighted 0.
      trainable_schedule: Optional function of the round number (an int32
        tensor, counted by the client work from 0) returning a boolean vector
        with one entry per trainable variable: the variables clients may train
        that round. The others keep their broadcast values, so their update is
        exactly zero.
      bn_statistics: ``"average"``: the clients' non-trainable variables
        after training (BatchNorm moving statistics) are averaged with equal
        weights over the clients whose training stayed finite, and the mean is
        kept in the state under ``non_trainable`` (`build_learning_process`
        makes it the global model's). ``"local"``: they are not uploaded.

    Returns:
      A `tff.learning.templates.ClientWorkProcess` whose state is
      ``OrderedDict(hparams=<optimizer hparams>, round_num=<int32>)`` (plus
      ``non_trainable`` when averaging) and whose measurements are
      ``OrderedDict(train=<model metrics>)``.

    Raises:
      ValueError: If `proximal_strength` < 0, or `client_weighting` or
        `bn_statistics` is unknown.
    """
    if client_weighting not in ("uniform", "example"):
        raise ValueError(
            "Invalid value for argument `client_weighting`. Expected 'uniform' or 'example'. "
            f"Received: client_weighting={client_weighting!r}"
        )
    if proximal_strength < 0:
        raise ValueError(
            "Invalid value for argument `proximal_strength`. Expected a float >= 0. "
            f"Received: proximal_strength={proximal_strength!r}"
        )
    if bn_statistics not in ("average", "local"):
        raise ValueError(
            "Invalid value for argument `bn_statistics`. Expected 'average' or 'local'. "
            f"Received: bn_statistics={bn_statistics!r}"
        )
    initial_weights, weights_type, data_type, aggregate_metrics = model_types(model_fn)
    num_trainable = len(weights_type.trainable)
    hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec([], tf.float32)))
    uniform = client_weighting == "uniform"
    average_bn = bn_statistics == "average" and len(weights_type.non_trainable) > 0

    def make_state(hparams, round_num, non_trainable=None):
        state = collections.OrderedDict(hparams=hparams, round_num=round_num)
        if average_bn:
            state["non_trainable"] = non_trainable
        return state

    @tff.tensorflow.computation()
    def init_state():
        return make_state(
            tf.nest.map_structure(tf.constant, hparams),
            tf.constant(0, tf.int32),
            initial_weights().non_trainable if average_bn else None,
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
        return make_state(new_hparams, state["round_num"], state.get("non_trainable"))

    @tff.tensorflow.computation(state_type)
    def round_plan(state):
        if trainable_schedule is None:
            mask = tf.ones([num_trainable], tf.bool)
        else:
            mask = tf.reshape(
                tf.cast(trainable_schedule(state["round_num"]), tf.bool), [num_trainable]
            )
        return collections.OrderedDict(hparams=state["hparams"], trainable=mask)

    @tff.tensorflow.computation(state_type)
    def advance(state):
        return make_state(state["hparams"], state["round_num"] + 1, state.get("non_trainable"))

    plan_type = round_plan.type_signature.result

    if average_bn:
        stats_type = tff.types.to_type(
            (weights_type.non_trainable, tff.TensorType(np.int32))
        )

        @tff.tensorflow.computation(state_type, stats_type)
        def mean_statistics(state, summed):
            total, count = summed
            # No client kept: the statistics stay as they were (no 0/0).
            mean = tf.nest.map_structure(
                lambda t, old: tf.where(count > 0, t / tf.cast(tf.maximum(count, 1), t.dtype), old),
                list(total),
                list(state["non_trainable"]),
            )
            return make_state(state["hparams"], state["round_num"], mean)

    @tff.tensorflow.computation(plan_type, weights_type, data_type)
    def client_update(plan, initial_weights, data):
        model, train = build_local_training(
            model_fn, optimizer, proximal_strength=proximal_strength
        )
        mask = tuple(tf.unstack(plan["trainable"], num=num_trainable))
        trained, num_examples, metrics = train(
            initial_weights, data, plan["hparams"], None if trainable_schedule is None else mask
        )
        update = tf.nest.map_structure(tf.subtract, initial_weights.trainable, trained.trainable)
        finite = all_finite(update)
        update = zeros_if(tf.logical_not(finite), update)
        weight = tf.constant(1.0) if uniform else tf.cast(num_examples, tf.float32)
        weight = tf.where(finite, weight, 0.0)
        result = tff.learning.templates.ClientResult(update=update, update_weight=weight)
        if not average_bn:
            return result, metrics
        stats = trained.non_trainable
        kept = tf.logical_and(finite, all_finite(stats))
        stats = zeros_if(tf.logical_not(kept), stats)
        return result, metrics, (stats, tf.cast(kept, tf.int32))

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
        new_state = tff.federated_map(advance, state)
        if average_bn:
            summed = tff.federated_sum(outputs[2])
            new_state = tff.federated_map(mean_statistics, (new_state, summed))
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
    client_weighting: ClientWeighting = "example",
    trainable_schedule: TrainableSchedule | None = None,
    bn_statistics: BnStatistics = "local",
) -> tff.learning.templates.LearningProcess:
    """Composes FedAvg-style training with keras_luar's client work.

    With ``proximal_strength=0`` and no schedule this is
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
      client_weighting: ``"example"`` or ``"uniform"`` (see `build_client_work`).
      trainable_schedule: See `build_client_work`.
      bn_statistics: ``"average"`` makes the mean of the clients' non-trainable
        variables (BatchNorm moving statistics) after training the global
        model's, every round, as the official FedLUAR code does; ``"local"``
        keeps the server's values (TFF's behaviour).

    Returns:
      A `tff.learning.templates.LearningProcess`.

    Raises:
      ValueError: For a negative μ or an unknown weighting.

    Examples:
      >>> process = build_learning_process(  # doctest: +SKIP
      ...     model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.05),
      ...     proximal_strength=0.001, model_aggregator=keras_luar.LuarFactory(2))
    """
    client_work = build_client_work(
        model_fn,
        client_optimizer,
        proximal_strength=proximal_strength,
        client_weighting=client_weighting,
        trainable_schedule=trainable_schedule,
        bn_statistics=bn_statistics,
    )
    initial_weights, weights_type, _, _ = model_types(model_fn)
    if server_optimizer is None:
        server_optimizer = tff.learning.optimizers.build_sgdm(1.0)
    aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
        weights_type.trainable, tff.TensorType(np.float32)
    )
    process = tff.learning.templates.compose_learning_process(
        initial_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )
    if bn_statistics == "local" or not weights_type.non_trainable:
        return process
    return _with_averaged_statistics(process)


def _with_averaged_statistics(process):
    """After each round, the global non-trainable variables become the client mean."""
    state_type = process.initialize.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def adopt(state):
        weights = state.global_model_weights
        weights = tff.learning.models.ModelWeights(
            trainable=weights.trainable,
            non_trainable=type(weights.non_trainable)(state.client_work["non_trainable"]),
        )
        return state._replace(global_model_weights=weights)

    param = process.next.type_signature.parameter

    @tff.federated_computation(param[0], param[1])
    def next_fn(state, data):
        output = process.next(state, data)
        return tff.learning.templates.LearningProcessOutput(
            tff.federated_map(adopt, output.state), output.metrics
        )

    return tff.learning.templates.LearningProcess(
        process.initialize,
        next_fn,
        process.get_model_weights,
        process.set_model_weights,
        get_hparams_fn=process.get_hparams,
        set_hparams_fn=process.set_hparams,
    )
