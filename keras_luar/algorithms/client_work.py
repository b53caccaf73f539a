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
TrainableSchedule = Callable[[tf.Tensor], tf.Tensor]


def build_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    *,
    proximal_strength: float = 0.0,
    client_weighting: ClientWeighting = "example",
    trainable_schedule: TrainableSchedule | None = None,
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

    Returns:
      A `tff.learning.templates.ClientWorkProcess` whose state is
      ``OrderedDict(hparams=<optimizer hparams>, round_num=<int32>)`` and whose
      measurements are ``OrderedDict(train=<model metrics>)``.

    Raises:
      ValueError: If `proximal_strength` < 0 or `client_weighting` is unknown.
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
    _, weights_type, data_type, aggregate_metrics = model_types(model_fn)
    num_trainable = len(weights_type.trainable)
    hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec([], tf.float32)))
    uniform = client_weighting == "uniform"

    @tff.tensorflow.computation()
    def init_state():
        return collections.OrderedDict(
            hparams=tf.nest.map_structure(tf.constant, hparams),
            round_num=tf.constant(0, tf.int32),
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
        return collections.OrderedDict(hparams=new_hparams, round_num=state["round_num"])

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
        return collections.OrderedDict(hparams=state["hparams"], round_num=state["round_num"] + 1)

    plan_type = round_plan.type_signature.result

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
        return tff.learning.templates.ClientResult(update=update, update_weight=weight), metrics

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, data):
        plan = tff.federated_broadcast(tff.federated_map(round_plan, state))
        result, model_metrics = tff.federated_map(client_update, (plan, weights, data))
        measurements = tff.federated_zip(
            collections.OrderedDict(train=aggregate_metrics(model_metrics))
        )
        return tff.templates.MeasuredProcessOutput(
            tff.federated_map(advance, state), result, measurements
        )

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
    )
    initial_weights, weights_type, _, _ = model_types(model_fn)
    if server_optimizer is None:
        server_optimizer = tff.learning.optimizers.build_sgdm(1.0)
    aggregator = (model_aggregator or tff.aggregators.MeanFactory()).create(
        weights_type.trainable, tff.TensorType(np.float32)
    )
    return tff.learning.templates.compose_learning_process(
        initial_weights,
        tff.learning.templates.build_broadcast_process(weights_type),
        client_work,
        aggregator,
        tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type),
    )
