"""FedLAMA (`build_fedlama`) against an independent numpy replay, FedAvg at φ = 1, bad configs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar  # noqa: F401 - sets up the TFF runtime clean-up before TFF runs
from keras_luar.algorithms.client_work import build_learning_process
from keras_luar.algorithms.fedlama import build_fedlama
from keras_luar.algorithms.weighting import sized_client_data

INPUT_SPEC = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 2], tf.float32))
# Trainable variables in TFF's order: W1 (4,3), b1, W2 (3,3), b2, W3 (3,2), b3.
SHAPES = [(4, 3), (3,), (3, 3), (3,), (3, 2), (2,)]
SIZES = np.array([int(np.prod(s)) for s in SHAPES])
KERNELS = [0, 2, 4]
TAU = 2  # local steps = batches per client per round
BATCH = [2, 3, 4]  # per client
DATA_SIZES = [10.0, 990.0, 55.0]  # n_i of "example" weighting, not the examples of a round
LR = 0.2
PHI = 2
WARMUP = 2  # FedAvg rounds 0-1; intervals are adjusted at the ends of rounds 1, 3, 5, ...
ROUNDS = 10


def _model_fn():
    model = tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(3, activation="tanh"),
            tf.keras.layers.Dense(3, activation="tanh"),
            tf.keras.layers.Dense(2),
        ]
    )
    return tff.learning.models.from_keras_model(
        model, loss=tf.keras.losses.MeanSquaredError(), input_spec=INPUT_SPEC
    )


def _sgd():
    return tff.learning.optimizers.build_sgdm(learning_rate=LR)  # momentum 0: plain SGD


def _initial_weights(seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=s) * 0.6).astype(np.float32) for s in SHAPES]


def _round_data(rounds, seed=0):
    """data[t][i] = (x, y) of client i in round t: TAU batches of BATCH[i] examples.

    Each client fits its own map, so the clients' models drift apart, and the
    kernels drift by clearly different amounts.
    """
    rng = np.random.default_rng(seed)
    maps = [rng.normal(size=(4, 2)) * (1.0 + i) for i in range(3)]
    data = []
    for _ in range(rounds):
        row = []
        for i in range(3):
            n = TAU * BATCH[i]
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = (np.tanh(x @ maps[i]) + 0.1 * rng.normal(size=(n, 2))).astype(np.float32)
            row.append((x, y))
        data.append(row)
    return data


def _datasets(row):
    return [
        tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH[i]) for i, (x, y) in enumerate(row)
    ]


# ---- the numpy reference ---------------------------------------------------------------


def _local_sgd(weights, x, y, batch):
    """Plain SGD on Keras' mean squared error, one step per batch, in float64."""
    w1, b1, w2, b2, w3, b3 = [np.array(w, np.float64) for w in weights]
    for k in range(0, len(x), batch):
        xb, yb = x[k : k + batch].astype(np.float64), y[k : k + batch].astype(np.float64)
        h1 = np.tanh(xb @ w1 + b1)
        h2 = np.tanh(h1 @ w2 + b2)
        out = h2 @ w3 + b3
        g_out = 2.0 * (out - yb) / out.size
        g_a2 = (g_out @ w3.T) * (1.0 - h2**2)
        g_a1 = (g_a2 @ w2.T) * (1.0 - h1**2)
        grads = [xb.T @ g_a1, g_a1.sum(0), h1.T @ g_a2, g_a2.sum(0), h2.T @ g_out, g_out.sum(0)]
        w1, b1, w2, b2, w3, b3 = [
            w - LR * g for w, g in zip((w1, b1, w2, b2, w3, b3), grads, strict=True)
        ]
    return [w1, b1, w2, b2, w3, b3]


def _reference_intervals(d):
    """The official update_intervals loop, written over plain Python lists."""
    intervals = np.ones(len(SHAPES), np.int64)
    total_mass = sum(d[v] * SIZES[v] for v in range(len(SHAPES)))
    kernel_params = sum(SIZES[v] for v in KERNELS)
    acc_delta = acc_lambda = 0.0
    collected = []
    for v in sorted(KERNELS, key=lambda v: d[v]):
        acc_delta += d[v] * SIZES[v]
        acc_lambda += SIZES[v]
        collected.append(v)
        if 1.0 - acc_lambda / kernel_params < acc_delta / total_mass:
            break
    intervals[collected] = PHI
    return intervals


class Reference:
    """FedLAMA replayed with numpy: global model, client copies, intervals, discrepancy."""

    def __init__(self, weights, weighting):
        self.global_ = [np.array(w, np.float64) for w in weights]
        self.weighting = weighting
        self.intervals = np.ones(len(SHAPES), np.int64)
        self.discrepancy = np.zeros(len(SHAPES))
        self.counts = np.zeros(len(SHAPES), np.int64)
        self.local = {}  # client -> (model, round it last trained)
        self.round = 0

    def next(self, row, fresh_clients=()):
        t = self.round
        used = self.intervals.copy()
        synced_last = t % used == 0
        sync = (t + 1) % used == 0
        trained, weights = [], []
        for i, (x, y) in enumerate(row):
            model, last = self.local.get(i, (None, -1))
            if i in fresh_clients:
                model, last = None, -1
            start = [
                model[v] if last == t - 1 and not synced_last[v] else self.global_[v]
                for v in range(len(SHAPES))
            ]
            trained.append(_local_sgd(start, x, y, BATCH[i]))
            weights.append(1.0 if self.weighting == "uniform" else DATA_SIZES[i])
        w = np.array(weights) / sum(weights)
        for v in np.flatnonzero(sync):
            mean = sum(w[i] * trained[i][v] for i in range(3))
            dist = sum(w[i] * np.sum((mean - trained[i][v]) ** 2) for i in range(3))
            self.discrepancy[v] = dist / (used[v] * TAU * SIZES[v])
            self.global_[v] = mean
            for i in range(3):
                trained[i][v] = mean
        self.local = {i: (trained[i], t) for i in range(3)}
        self.counts += sync
        if (t + 1) % PHI == 0 and t >= WARMUP - 1:
            self.intervals = _reference_intervals(self.discrepancy)
        self.round += 1
        upload = 3 * int(SIZES[sync].sum())
        return used, sync, upload


# ---- tests -------------------------------------------------------------------------------


def test_matches_numpy_reference():
    # Example weighting (data set sizes) with unequal sizes; uniform weighting is
    # checked against FedAvg in test_interval_one_is_fedavg.
    weighting = "example"
    process = build_fedlama(
        _model_fn,
        client_optimizer=_sgd(),
        local_steps=TAU,
        aggregation_interval=PHI,
        fedavg_rounds=WARMUP,
        client_weighting=weighting,
    )
    assert process.client_period == PHI
    initial = _initial_weights()
    state = process.set_model_weights(
        process.initialize(), tff.learning.models.ModelWeights(trainable=initial, non_trainable=[])
    )
    data = _round_data(ROUNDS)
    ref = Reference(initial, weighting)
    client_states = [process.initial_client_state() for _ in range(3)]
    history = []
    for t in range(ROUNDS):
        # Mid-period newcomers must start from the global model: client 2 in round 5
        # arrives with a fresh state, client 1 in round 7 with one from round 5 (stale).
        fresh = ()
        if t == 5:
            stale = client_states[1]  # its state from round 4, handed back in round 7
            client_states[2] = process.initial_client_state()
            fresh = (2,)
        if t == 7:
            client_states[1] = stale
            fresh = (1,)
        datasets = [
            sized_client_data(ds, n) for ds, n in zip(_datasets(data[t]), DATA_SIZES, strict=True)
        ]
        out = process.next(state, datasets, client_states)
        used, sync, upload = ref.next(data[t], fresh)
        state, client_states = out.state, list(out.client_states)
        history.append(used)
        err = f"round {t}"

        got = process.get_model_weights(state).trainable
        for v in range(len(SHAPES)):
            np.testing.assert_allclose(got[v], ref.global_[v], atol=2e-5, err_msg=err)
        for i in range(3):
            assert int(client_states[i]["round_num"]) == t
            for v in range(len(SHAPES)):
                np.testing.assert_allclose(
                    client_states[i]["model"][v], ref.local[i][0][v], atol=2e-5, err_msg=err
                )
        np.testing.assert_array_equal(out.metrics["fedlama"]["intervals"], used, err_msg=err)
        np.testing.assert_array_equal(state["intervals"], ref.intervals, err_msg=err)
        np.testing.assert_allclose(
            out.metrics["fedlama"]["discrepancy"],
            ref.discrepancy,
            rtol=2e-3,
            atol=1e-9,
            err_msg=err,
        )
        np.testing.assert_array_equal(state["sync_counts"], ref.counts, err_msg=err)
        comm = out.metrics["communication"]
        assert int(comm["upload_params"]) == upload, err
        assert int(comm["upload_bytes"]) == 4 * upload, err
        np.testing.assert_array_equal(comm["aggregated"], sync.astype(np.float32), err_msg=err)
        train = out.metrics["client_work"]["train"]
        assert int(train["num_examples"]) == TAU * sum(BATCH), err

    # The test must exercise the method: FedAvg during the warm-up, then kernels on
    # interval φ, partial rounds, and a kernel that went back to interval 1.
    history = np.array(history)
    assert (history[:WARMUP] == 1).all()
    assert (history[:, [1, 3, 5]] == 1).all()
    assert (history == PHI).any()
    assert np.any((history[:-2] == PHI) & (history[2:] == 1)), history
    assert int(state["round_num"]) == ROUNDS


def test_interval_one_is_fedavg():
    process = build_fedlama(
        _model_fn,
        client_optimizer=_sgd(),
        server_optimizer=tff.learning.optimizers.build_sgdm(1.0),  # the trainer's default
        local_steps=TAU,
        aggregation_interval=1,
        fedavg_rounds=0,
        client_weighting="uniform",
    )
    fedavg = build_learning_process(_model_fn, client_optimizer=_sgd(), client_weighting="uniform")
    weights = tff.learning.models.ModelWeights(trainable=_initial_weights(), non_trainable=[])
    state = process.set_model_weights(process.initialize(), weights)
    state_avg = fedavg.set_model_weights(fedavg.initialize(), weights)
    client_states = [process.initial_client_state() for _ in range(3)]
    data = _round_data(4, seed=5)
    for t in range(4):
        out = process.next(state, _datasets(data[t]), client_states)
        state, client_states = out.state, list(out.client_states)
        state_avg = fedavg.next(state_avg, _datasets(data[t])).state
        for a, b in zip(
            process.get_model_weights(state).trainable,
            fedavg.get_model_weights(state_avg).trainable,
            strict=True,
        ):
            np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"round {t}")
        assert int(out.metrics["communication"]["upload_params"]) == 3 * SIZES.sum()
        np.testing.assert_array_equal(out.metrics["fedlama"]["intervals"], 1)


@pytest.mark.parametrize(
    "kwargs,error,name",
    [
        ({"aggregation_interval": 0}, ValueError, "aggregation_interval=0"),
        ({"aggregation_interval": -1}, ValueError, "aggregation_interval=-1"),
        ({"aggregation_interval": 1.5}, TypeError, "aggregation_interval=1.5"),
        ({"fedavg_rounds": -1}, ValueError, "fedavg_rounds=-1"),
        ({"local_steps": 0}, ValueError, "local_steps=0"),
        ({"client_weighting": "examples"}, ValueError, "client_weighting='examples'"),
        ({"server_optimizer": _sgd()}, ValueError, "server_optimizer="),
        (
            {"server_optimizer": tff.learning.optimizers.build_sgdm(1.0, momentum=0.9)},
            ValueError,
            "server_optimizer=",
        ),
    ],
)
def test_bad_configuration(kwargs, error, name):
    arguments = dict(client_optimizer=_sgd(), local_steps=TAU) | kwargs
    with pytest.raises(error, match=f"Invalid value for argument `.*Received: {name}"):
        build_fedlama(_model_fn, **arguments)
