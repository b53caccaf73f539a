"""LuarFactory inside TFF's own learning-process builders, with a real Keras model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar

INPUT_SPEC = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32))
KERNELS = [0, 2, 4]  # trainable: k1 (4,5), b1, k2 (5,4), b2, k3 (4,3), b3


def _keras_model():
    return tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(5, activation="tanh"),
            tf.keras.layers.Dense(4, activation="tanh"),
            tf.keras.layers.Dense(3),
        ]
    )


def _model_fn():
    return tff.learning.models.from_keras_model(
        _keras_model(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=INPUT_SPEC,
    )


def _client_data(num_clients=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_clients):
        n = 6 + 2 * i  # unequal sizes, so example weighting differs from uniform
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, n).astype(np.int32)
        out.append(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    return out


def _fixed_weights(process, state, seed=1):
    rng = np.random.default_rng(seed)
    weights = process.get_model_weights(state)
    trainable = [rng.normal(size=np.shape(w)).astype(np.float32) * 0.5 for w in weights.trainable]
    new = tff.learning.models.ModelWeights(trainable=trainable, non_trainable=[])
    return process.set_model_weights(state, new)


def _run(process, rounds, data):
    state = _fixed_weights(process, process.initialize())
    history = []
    for _ in range(rounds):
        before = [np.array(w) for w in process.get_model_weights(state).trainable]
        out = process.next(state, data)
        state = out.state
        history.append((before, out))
    return state, history


def _sgd():
    return tff.learning.optimizers.build_sgdm(learning_rate=0.1)


@pytest.mark.parametrize(
    "luar_weighting,tff_weighting",
    [
        ("example", tff.learning.ClientWeighting.NUM_EXAMPLES),
        ("uniform", tff.learning.ClientWeighting.UNIFORM),
    ],
)
def test_delta_zero_is_tff_fedavg_bit_for_bit(luar_weighting, tff_weighting):
    data = _client_data()
    fedavg = tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, client_optimizer_fn=_sgd(), client_weighting=tff_weighting
    )
    luar = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn,
            client_optimizer_fn=_sgd(),
            client_weighting=tff_weighting,
            model_aggregator=keras_luar.LuarFactory(0, client_weighting=luar_weighting),
        )
    )
    state_a, _ = _run(fedavg, 3, data)
    state_b, _ = _run(luar, 3, data)
    for a, b in zip(
        fedavg.get_model_weights(state_a).trainable,
        luar.get_model_weights(state_b).trainable,
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_wrapped_fed_avg_scores_use_global_weight_norms_and_recycle_exactly():
    data = _client_data()
    process = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn,
            client_optimizer_fn=_sgd(),
            model_aggregator=keras_luar.LuarFactory(1, seed=5),
        )
    )
    state, history = _run(process, 5, data)
    recycled_seen = 0
    for t, (before, out) in enumerate(history):
        luar = out.state.aggregator
        after = [np.array(w) for w in process.get_model_weights(out.state).trainable]
        mask = np.asarray(out.metrics["aggregator"]["luar"]["recycled"])
        assert not out.metrics["aggregator"]["luar"]["weight_norms_missing"]
        for j, i in enumerate(KERNELS):
            # TFF's default server optimizer is SGD(1.0) on (initial - trained), so the
            # applied update is -U: x_{t+1} = x_t - U.
            np.testing.assert_allclose(after[i], before[i] - luar.last_updates[j], atol=1e-6)
            if not mask[j]:
                expected = np.linalg.norm(luar.last_updates[j]) / (np.linalg.norm(before[i]) + 1e-6)
                np.testing.assert_allclose(luar.scores[j], expected, rtol=1e-5)
            else:
                recycled_seen += 1
                previous = history[t - 1][1].state.aggregator
                np.testing.assert_array_equal(luar.last_updates[j], previous.last_updates[j])
                assert luar.scores[j] == previous.scores[j]
    assert recycled_seen == 4  # rounds 1..4 each recycle one kernel


def test_secure_aggregator_inside_tffs_builder_under_tffs_test_context():
    # What the docs tell TFF-builder users: TFF's own test context simulates secure sums.
    # The same process with a plain mean gives the same recycled layers and weights.
    data = _client_data()
    runs = []
    for inner in (
        tff.aggregators.MeanFactory(
            value_sum_factory=tff.aggregators.SecureSumFactory(10.0),
            weight_sum_factory=tff.aggregators.SecureSumFactory(100.0),
        ),
        None,
    ):
        process = keras_luar.with_global_weight_norms(
            tff.learning.algorithms.build_weighted_fed_avg(
                _model_fn,
                client_optimizer_fn=_sgd(),
                model_aggregator=keras_luar.LuarFactory(1, seed=5, inner_factory=inner),
            )
        )
        context = tff.backends.test.create_sync_test_cpp_execution_context()
        with tff.framework.get_context_stack().install(context):
            state, history = _run(process, 3, data)
        runs.append((process.get_model_weights(state).trainable, history))
    (secure, secure_history), (plain, plain_history) = runs
    for (_, a), (_, b) in zip(secure_history, plain_history, strict=True):
        recycled = a.metrics["aggregator"]["luar"]["recycled"]
        np.testing.assert_array_equal(recycled, b.metrics["aggregator"]["luar"]["recycled"])
    assert np.any([h.metrics["aggregator"]["luar"]["recycled"] for _, h in secure_history])
    for a, b in zip(secure, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unwrapped_process_reports_missing_norms():
    process = tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, client_optimizer_fn=_sgd(), model_aggregator=keras_luar.LuarFactory(1)
    )
    _, history = _run(process, 1, _client_data())
    assert bool(history[0][1].metrics["aggregator"]["luar"]["weight_norms_missing"])


def test_fed_prox_composition():
    process = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_prox(
            _model_fn,
            proximal_strength=0.01,
            client_optimizer_fn=_sgd(),
            model_aggregator=keras_luar.LuarFactory(1, seed=2),
        )
    )
    _, history = _run(process, 3, _client_data())
    per_client = [
        int(o.metrics["aggregator"]["luar"]["upload_params_per_client"]) for _, o in history
    ]
    sizes = {0: 20, 2: 20, 4: 12}
    total = 20 + 5 + 20 + 4 + 12 + 3
    assert per_client[0] == total
    for (_, out), sent in zip(history[1:], per_client[1:], strict=True):
        mask = np.asarray(out.metrics["aggregator"]["luar"]["recycled"])
        assert sent == total - sum(sizes[i] for j, i in enumerate(KERNELS) if mask[j])
        assert not out.metrics["aggregator"]["luar"]["weight_norms_missing"]


def _reference_server(optimizer, history, initial):
    """Replays the server optimizer in numpy on the aggregated kernel updates."""
    weights = [np.array(initial[i], np.float64) for i in KERNELS]
    slots = [dict() for _ in KERNELS]
    for t, (_, out) in enumerate(history):
        for j in range(len(KERNELS)):
            g = np.asarray(out.state.aggregator.last_updates[j], np.float64)
            weights[j] = optimizer(weights[j], g, slots[j], t + 1)
    return weights


def _sgdm(lr, momentum):
    def step(w, g, slot, t):
        slot["v"] = momentum * slot.get("v", 0.0) + g
        return w - lr * slot["v"]

    return step


def _adam(lr, b1=0.9, b2=0.999, eps=1e-7):
    def step(w, g, slot, t):
        slot["m"] = b1 * slot.get("m", 0.0) + (1 - b1) * g
        slot["v"] = b2 * slot.get("v", 0.0) + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        return w - lr_t * slot["m"] / (np.sqrt(slot["v"]) + eps)

    return step


@pytest.mark.parametrize(
    "server_optimizer,reference",
    [
        (tff.learning.optimizers.build_sgdm(learning_rate=0.7, momentum=0.9), _sgdm(0.7, 0.9)),
        (tff.learning.optimizers.build_adam(learning_rate=0.05), _adam(0.05)),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_server_optimizers_receive_the_recycled_update(server_optimizer, reference):
    process = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn,
            client_optimizer_fn=_sgd(),
            server_optimizer_fn=server_optimizer,
            model_aggregator=keras_luar.LuarFactory(1, seed=3),
        )
    )
    state, history = _run(process, 4, _client_data())
    assert sum(int(o.metrics["aggregator"]["luar"]["num_recycled"]) for _, o in history) == 3
    expected = _reference_server(reference, history, history[0][0])
    final = process.get_model_weights(state).trainable
    for j, i in enumerate(KERNELS):
        np.testing.assert_allclose(final[i], expected[j], rtol=1e-4, atol=1e-5)


def test_checkpoint_round_trip_gives_the_same_next_round(tmp_path):
    data = _client_data()
    process = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn,
            client_optimizer_fn=_sgd(),
            server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0, momentum=0.9),
            model_aggregator=keras_luar.LuarFactory(1, seed=4),
        )
    )
    state, _ = _run(process, 2, data)
    manager = tff.program.FileProgramStateManager(str(tmp_path))
    asyncio.run(manager.save(state, version=2))
    loaded, version = asyncio.run(manager.load_latest(process.initialize()))
    assert version == 2
    np.testing.assert_array_equal(loaded.aggregator.recycle_mask, state.aggregator.recycle_mask)
    a = process.next(state, data)
    b = process.next(loaded, data)
    for x, y in zip(
        process.get_model_weights(a.state).trainable,
        process.get_model_weights(b.state).trainable,
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.state.aggregator.recycle_mask, b.state.aggregator.recycle_mask)
    np.testing.assert_array_equal(a.state.aggregator.scores, b.state.aggregator.scores)


def test_wrapper_rejects_processes_without_luar():
    process = tff.learning.algorithms.build_weighted_fed_avg(_model_fn, client_optimizer_fn=_sgd())
    with pytest.raises(ValueError, match="no LuarFactory state"):
        keras_luar.with_global_weight_norms(process)
    with pytest.raises(TypeError, match="process"):
        keras_luar.with_global_weight_norms(object())


def test_nan_client_never_reaches_global_model():
    data = _client_data()
    bad_x = np.full((4, 4), np.nan, np.float32)
    data[1] = tf.data.Dataset.from_tensor_slices((bad_x, np.zeros(4, np.int32))).batch(4)
    process = keras_luar.with_global_weight_norms(
        tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn, client_optimizer_fn=_sgd(), model_aggregator=keras_luar.LuarFactory(1)
        )
    )
    state, history = _run(process, 3, data)
    for _, out in history:
        assert out.metrics["aggregator"]["luar"]["num_dropped_clients"] == 1
        for u in out.state.aggregator.last_updates:
            assert np.all(np.isfinite(u))
    for w in process.get_model_weights(state).trainable:
        assert np.all(np.isfinite(w))
