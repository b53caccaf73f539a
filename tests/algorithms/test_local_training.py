"""The shared client work: FedAvg parity with TFF, FedProx's proximal term, frozen variables."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar  # noqa: F401  (sets up TFF's worker clean-up)
from keras_luar.algorithms import build_client_work, build_learning_process

LR = 0.1


def _client_arrays(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(6, 2)).astype(np.float32)
    return x, y


CLIENTS = [_client_arrays(s) for s in range(3)]


def _dataset(x, y, batch=2):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


SPEC = _dataset(*CLIENTS[0]).element_spec


def _keras(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2, name="d")])


def model_fn():
    return tff.learning.models.from_keras_model(
        _keras(), loss=tf.keras.losses.MeanSquaredError(), input_spec=SPEC
    )


def _initial():
    model = _keras()
    return [w.copy() for w in model.get_weights()]  # kernel [3, 2], bias [2]


def _grads(w, b, x, y):
    """Gradients of Keras' MeanSquaredError (mean over batch and outputs) for y = xW + b."""
    err = x @ w + b - y
    scale = 2.0 / err.size
    return scale * x.T @ err, scale * err.sum(axis=0)


def _local_numpy(w0, b0, x, y, mu=0.0, sign=1.0, momentum=0.0, frozen=()):
    """Plain numpy replay of local SGD over batches of 2 with a proximal term."""
    w, b = w0.copy(), b0.copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for i in range(0, len(x), 2):
        gw, gb = _grads(w, b, x[i : i + 2], y[i : i + 2])
        gw = gw + sign * mu * (w - w0)
        gb = gb + sign * mu * (b - b0)
        if "kernel" in frozen:
            gw = np.zeros_like(gw)
        if "bias" in frozen:
            gb = np.zeros_like(gb)
        vw, vb = momentum * vw + gw, momentum * vb + gb
        w, b = w - LR * vw, b - LR * vb
    return w, b, len(x)


def _round_numpy(w, b, clients, **kwargs):
    """One FedAvg round (example-weighted mean of client models)."""
    results = [_local_numpy(w, b, x, y, **kwargs) for x, y in clients]
    n = np.array([r[2] for r in results], np.float64)
    w_new = sum(r[0] * k for r, k in zip(results, n, strict=True)) / n.sum()
    b_new = sum(r[1] * k for r, k in zip(results, n, strict=True)) / n.sum()
    return w_new, b_new


def _clients(sizes=(6, 4, 2)):
    return [(x[:n], y[:n]) for (x, y), n in zip(CLIENTS, sizes, strict=True)]


def test_fedavg_composition_equals_tff_fedavg_bit_for_bit():
    ours = build_learning_process(
        model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(LR, momentum=0.9)
    )
    theirs = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR, momentum=0.9)
    )
    data = [_dataset(x, y) for x, y in _clients()]
    a, b = ours.initialize(), theirs.initialize()
    for _ in range(3):
        out_a, out_b = ours.next(a, data), theirs.next(b, data)
        a, b = out_a.state, out_b.state
        for wa, wb in zip(
            ours.get_model_weights(a).trainable, theirs.get_model_weights(b).trainable, strict=True
        ):
            np.testing.assert_array_equal(wa, wb)
        assert out_a.metrics["client_work"]["train"] == out_b.metrics["client_work"]["train"]


def test_fedprox_matches_numpy_with_the_proximal_gradient_pulling_back():
    mu = 0.5
    process = build_learning_process(
        model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(LR),
        proximal_strength=mu,
    )
    clients = _clients()
    data = [_dataset(x, y) for x, y in clients]
    state = process.initialize()
    w, b = _initial()
    for _ in range(3):
        state = process.next(state, data).state
        w, b = _round_numpy(w, b, clients, mu=mu)
        got = process.get_model_weights(state).trainable
        np.testing.assert_allclose(got[0], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], b, rtol=1e-5, atol=1e-6)
    # The term matters: the same rounds without it end elsewhere.
    w0, b0 = _initial()
    for _ in range(3):
        w0, b0 = _round_numpy(w0, b0, clients)
    assert np.abs(w0 - w).max() > 1e-3


def test_tff_fed_prox_pushes_away_from_the_global_model():
    """Why keras_luar has its own client work: TFF 0.87's FedProx flips the sign."""
    mu = 0.5
    process = tff.learning.algorithms.build_weighted_fed_prox(
        model_fn,
        proximal_strength=mu,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR),
    )
    clients = _clients()
    state = process.next(process.initialize(), [_dataset(x, y) for x, y in clients]).state
    got = process.get_model_weights(state).trainable[0]
    flipped, _ = _round_numpy(*_initial(), clients, mu=mu, sign=-1.0)
    correct, _ = _round_numpy(*_initial(), clients, mu=mu, sign=1.0)
    np.testing.assert_allclose(got, flipped, rtol=1e-5, atol=1e-6)
    assert np.abs(got - correct).max() > 1e-4


def test_trainable_schedule_freezes_variables_exactly():
    def schedule(round_num):
        # Even rounds train the kernel only, odd rounds the bias only.
        even = tf.equal(round_num % 2, 0)
        return tf.stack([even, tf.logical_not(even)])

    process = build_learning_process(
        model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(LR, momentum=0.9),
        trainable_schedule=schedule,
    )
    clients = _clients()
    data = [_dataset(x, y) for x, y in clients]
    state = process.initialize()
    w, b = _initial()
    for t in range(4):
        before = [np.copy(v) for v in process.get_model_weights(state).trainable]
        state = process.next(state, data).state
        after = process.get_model_weights(state).trainable
        frozen = ("bias",) if t % 2 == 0 else ("kernel",)
        w, b = _round_numpy(w, b, clients, momentum=0.9, frozen=frozen)
        if t % 2 == 0:
            np.testing.assert_array_equal(after[1], before[1])
        else:
            np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_allclose(after[0], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(after[1], b, rtol=1e-5, atol=1e-6)


def test_uniform_weighting_and_non_finite_clients():
    work = build_client_work(
        model_fn, tff.learning.optimizers.build_sgdm(LR), client_weighting="uniform"
    )
    weights = tff.learning.models.ModelWeights(trainable=tuple(_initial()), non_trainable=())
    x, y = CLIENTS[0]
    bad_y = y.copy()
    bad_y[0, 0] = np.nan
    out = work.next(work.initialize(), [weights, weights], [_dataset(x, y), _dataset(x, bad_y)])
    good, bad = out.result
    assert good.update_weight == 1.0
    assert bad.update_weight == 0.0
    assert all(np.all(u == 0) for u in bad.update)
    w, b, _ = _local_numpy(*_initial(), x, y)
    np.testing.assert_allclose(good.update[0], _initial()[0] - w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"proximal_strength": -0.1}, ValueError, r"proximal_strength.*-0.1"),
        ({"client_weighting": "by_size"}, ValueError, r"client_weighting.*by_size"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_client_work(model_fn, tff.learning.optimizers.build_sgdm(LR), **kwargs)


def _bn_model_fn():
    model = tf.keras.Sequential(
        [
            tf.keras.Input((3,)),
            tf.keras.layers.BatchNormalization(momentum=0.5, name="bn"),
            tf.keras.layers.Dense(2, name="d"),
        ]
    )
    return tff.learning.models.from_keras_model(
        model, loss=tf.keras.losses.MeanSquaredError(), input_spec=SPEC
    )


def _shifted_clients():
    return [(x + 2.0 * i, y) for i, (x, y) in enumerate(_clients((6, 4, 2)))]


def _own_statistics(process, clients):
    """Each client alone for one round: its statistics after local training."""
    own = []
    for x, y in clients:
        state = process.next(process.initialize(), [_dataset(x, y)]).state
        own.append([np.copy(v) for v in process.get_model_weights(state).non_trainable])
    return own


@pytest.mark.parametrize("weighting", ["round_examples", "uniform"])
def test_averaged_batchnorm_statistics_are_the_weighted_mean_of_the_clients(weighting):
    averaging = build_learning_process(
        _bn_model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(LR),
        bn_statistics="average",
        client_weighting=weighting,
    )
    clients = _shifted_clients()
    own = _own_statistics(averaging, clients)
    # The moving mean of one client, replayed: m <- 0.5 m + 0.5 batch_mean per batch of 2.
    x0 = clients[0][0]
    mean = np.zeros(3)
    for i in range(0, len(x0), 2):
        mean = 0.5 * mean + 0.5 * x0[i : i + 2].mean(axis=0)
    np.testing.assert_allclose(own[0][0], mean, rtol=1e-5, atol=1e-6)

    state = averaging.next(averaging.initialize(), [_dataset(x, y) for x, y in clients]).state
    got = averaging.get_model_weights(state).non_trainable
    weights = np.array([6.0, 4.0, 2.0]) if weighting == "round_examples" else np.ones(3)
    for j in range(2):  # moving mean, moving variance: the clients' weighted mean
        want = sum(w * o[j] for w, o in zip(weights, own, strict=True)) / weights.sum()
        np.testing.assert_allclose(got[j], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], np.zeros(3))  # not the initial statistics


def test_local_batchnorm_statistics_stay_with_each_client():
    from keras_luar.algorithms import StatefulClientProcess

    process = build_learning_process(
        _bn_model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(LR),
        bn_statistics="local",
        client_weighting="uniform",
    )
    assert isinstance(process, StatefulClientProcess)
    clients = _shifted_clients()
    data = [_dataset(x, y) for x, y in clients]
    fresh = process.initial_client_state()
    out = process.next(process.initialize(), data, [fresh] * 3)
    # Round 0: every client trained from the global (initial) statistics, as when alone.
    averaging = build_learning_process(
        _bn_model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(LR)
    )
    own = _own_statistics(averaging, clients)
    for state, mine in zip(out.client_states, own, strict=True):
        assert state["has_statistics"]
        for got, want in zip(state["statistics"], mine, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The global model carries the clients' mean (never the initial statistics).
    global_stats = process.get_model_weights(out.state).non_trainable
    np.testing.assert_allclose(
        global_stats[0], np.mean([o[0] for o in own], axis=0), rtol=1e-5, atol=1e-6
    )
    # Round 1: client 0 goes on from its own statistics, not from the global mean:
    # m <- 0.5 m + 0.5 batch_mean from m = its own round-0 statistic.
    out2 = process.next(out.state, data[:1], out.client_states[:1])
    x0 = clients[0][0]
    mean = own[0][0]
    for i in range(0, len(x0), 2):
        mean = 0.5 * mean + 0.5 * x0[i : i + 2].mean(axis=0)
    np.testing.assert_allclose(out2.client_states[0]["statistics"][0], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16, tf.float64])
def test_all_finite_finds_every_nan_and_inf_eagerly_and_traced(dtype):
    from keras_luar.algorithms.local_training import all_finite

    shapes = [(3, 3, 1, 4), (4,), (0,), (512, 64), ()]
    tensors = [tf.cast(tf.random.stateless_normal(s, [1, 2]), dtype) for s in shapes]
    # Traced, Grappler rewrites the check's arithmetic (it folds t * 0 to zeros, for one).
    traced = tf.function(all_finite)
    assert bool(all_finite(tensors)) and bool(traced(tensors))
    for i, shape in enumerate(shapes):
        if 0 in shape:
            continue
        for bad in (np.nan, np.inf, -np.inf):
            values = np.array(tensors[i].numpy(), dtype=np.float64)
            values.reshape(-1)[values.size // 2] = bad
            broken = list(tensors)
            broken[i] = tf.cast(tf.constant(values), dtype)
            assert not bool(all_finite(broken)), (i, bad)
            assert not bool(traced(broken)), (i, bad)
    assert bool(all_finite([])) and bool(all_finite({"empty": tf.zeros([0, 3])}))
