"""Every method on every model family: the guard against silently wrong comparisons.

For each registered method (and LUAR on top where it stacks) and four small model
families (a plain CNN, a CNN with BatchNormalization, a GRU text model and an
Embedding + attention model), a short run on the digits must

* train (the loss falls),
* leave no non-trainable statistic at its initial value,
* report a validation accuracy close to the one its own weights give with the
  BatchNorm statistics recomputed on the training data,

and one round of two clients of unequal size must land on their data-size weighted
mean, computed independently in numpy. A method added to the registry without a
case here fails `test_every_registered_method_is_covered`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras_luar
from keras_luar.algorithms.registry import ALGORITHMS
from keras_luar.data import load_digits_federated

ROUNDS, PER_ROUND, BATCH = 4, 4, 16
NUM_CLASSES = 10

METHODS = {
    "fedavg": dict(algorithm="fedavg"),
    "fedluar": dict(algorithm="fedluar", num_recycled_layers=1),
    "fedprox": dict(algorithm="fedprox", proximal_strength=0.01),
    "fedprox+luar": dict(algorithm="fedprox", proximal_strength=0.01, num_recycled_layers=1),
    "fedopt": dict(algorithm="fedopt", server_optimizer=("sgd", 0.8)),
    "fedopt+luar": dict(algorithm="fedopt", server_optimizer=("sgd", 0.8), num_recycled_layers=1),
    "fedpaq": dict(algorithm="fedpaq", quantization_levels=8),
    "fedpaq+luar": dict(algorithm="fedpaq", quantization_levels=8, num_recycled_layers=1),
    "fedlama": dict(algorithm="fedlama", fedavg_rounds=2),
    "lbgm": dict(algorithm="lbgm", lbgm_threshold=0.5),
    "lbgm:paper": dict(algorithm="lbgm", lbgm_variant="paper"),
    "fedpart": dict(
        algorithm="fedpart", warmup_rounds=1, rounds_per_group=1, full_rounds_between_cycles=1
    ),
}
# The per-client statistics rules, on the family that has statistics.
LOCAL_STATISTICS = {
    "fedlama:local": dict(METHODS["fedlama"], bn_statistics="local"),
    "fedpart:local": dict(METHODS["fedpart"], bn_statistics="local"),
}


def _options(case: dict) -> dict:
    options = dict(case)
    if isinstance(options.get("server_optimizer"), tuple):
        options["server_optimizer"] = tf.keras.optimizers.SGD(options["server_optimizer"][1])
    options.setdefault("num_recycled_layers", None)
    return options


# ---- data and model families -------------------------------------------------------------


def _images(x):
    # Raw pixel values 0..16: activations far from a mean of 0 and a variance of 1, so
    # that a model left with the initial BatchNorm statistics is visibly wrong.
    return (x * 16.0).astype(np.float32)


def _tokens(x):
    # 2x2 mean pooling, then 5 intensity levels: a sequence of 16 tokens in 0..4.
    pooled = x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))
    return np.minimum((pooled * 5).astype(np.int32), 4).reshape(-1, 16)


def cnn():
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            tf.keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(NUM_CLASSES, name="logits"),
        ]
    )


def bn_cnn():
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            # Momentum 0.5: within a client's few local steps the moving statistics
            # reach those of the current weights (a momentum of 0.99 would still be
            # close to the initial values after this short a run, by design of the EMA).
            tf.keras.layers.Conv2D(8, 3, use_bias=False, name="conv1"),
            tf.keras.layers.BatchNormalization(momentum=0.5, name="bn1"),
            tf.keras.layers.ReLU(),
            tf.keras.layers.Conv2D(8, 3, use_bias=False, name="conv2"),
            tf.keras.layers.BatchNormalization(momentum=0.5, name="bn2"),
            tf.keras.layers.ReLU(),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(NUM_CLASSES, name="logits"),
        ]
    )


def gru():
    return tf.keras.Sequential(
        [
            tf.keras.Input((16,), dtype=tf.int32),
            tf.keras.layers.Embedding(5, 8, name="embedding"),
            tf.keras.layers.GRU(12, name="gru"),
            tf.keras.layers.Dense(NUM_CLASSES, name="logits"),
        ]
    )


def attention():
    tokens = tf.keras.Input((16,), dtype=tf.int32)
    h = tf.keras.layers.Embedding(5, 8, name="embedding")(tokens)
    h = h + tf.keras.layers.MultiHeadAttention(2, 4, name="attention")(h, h)
    h = tf.keras.layers.LayerNormalization(name="norm")(h)
    h = tf.keras.layers.GlobalAveragePooling1D()(h)
    return tf.keras.Model(tokens, tf.keras.layers.Dense(NUM_CLASSES, name="logits")(h))


# Family: (model, input transform, local steps, client optimizer).
FAMILIES = {
    "cnn": (cnn, _images, 4, lambda: tf.keras.optimizers.SGD(0.05, momentum=0.9)),
    "bn_cnn": (bn_cnn, _images, 4, lambda: tf.keras.optimizers.SGD(0.05, momentum=0.9)),
    # The sequence models learn this task slowly: more steps, with Adam.
    "gru": (gru, _tokens, 8, lambda: tf.keras.optimizers.Adam(0.03)),
    "attention": (attention, _tokens, 8, lambda: tf.keras.optimizers.Adam(0.03)),
}


def _data(transform):
    data = load_digits_federated(num_clients=8, iid=True, seed=0)
    clients = {cid: (transform(x), y) for cid, (x, y) in data.client_arrays.items()}
    x_test, y_test = data.test_data
    return clients, (transform(x_test), y_test)


def _trainer(build, case, **kwargs):
    tf.keras.utils.set_random_seed(0)
    options = dict(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        batch_size=BATCH,
        backend="tensorflow",
        seed=1,
    )
    options.update(_options(case))
    options.update(kwargs)
    return keras_luar.FederatedTrainer(build(), **options)


def _statistics(model):
    return {v.name: v.numpy().copy() for v in model.non_trainable_variables}


def _accuracy(model, x, y):
    logits = model(x, training=False).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == y))


def _with_statistics(model, x):
    """A copy of `model` whose BatchNorm statistics are recomputed on `x` in one pass."""
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the moving statistics become those of this one batch
    copy(x, training=True)
    return copy


# ---- the suite ---------------------------------------------------------------------------


def test_every_registered_method_is_covered():
    covered = {case["algorithm"] for case in METHODS.values()}
    assert covered == set(ALGORITHMS)
    stacks = {case["algorithm"] for case in METHODS.values() if case.get("num_recycled_layers")}
    assert stacks == {name for name, spec in ALGORITHMS.items() if spec.luar != "never"}
    for name, spec in ALGORITHMS.items():
        if "local" in spec.bn_statistics:
            assert f"{name}:local" in LOCAL_STATISTICS


CASES = [(m, f) for m in METHODS for f in FAMILIES]
CASES += [(m, "bn_cnn") for m in LOCAL_STATISTICS]


@pytest.mark.parametrize("method,family", CASES)
def test_method_trains_with_statistics_from_training(method, family):
    build, transform, steps, optimizer = FAMILIES[family]
    clients, (x_test, y_test) = _data(transform)
    trainer = _trainer(
        build, {**METHODS, **LOCAL_STATISTICS}[method], local_steps=steps,
        client_optimizer=optimizer(),
    )  # fmt: skip
    initial = _statistics(trainer.model)
    history = trainer.fit(
        clients, rounds=ROUNDS, clients_per_round=PER_ROUND, validation_data=(x_test, y_test),
        verbose=0,
    )  # fmt: skip
    logs = history.history
    # It trains: the last rounds' loss is below the first round's (a method that applies
    # nothing stays within a few thousandths).
    assert np.mean(logs["loss"][-2:]) < logs["loss"][0] - 0.02, logs["loss"]
    assert np.isfinite(trainer.model.get_weights()[0]).all()
    # No statistic stays at its initial value.
    for name, value in _statistics(trainer.model).items():
        assert np.abs(value - initial[name]).max() > 1e-3, f"{name} kept its initial value"
    # The reported accuracy is what the model has, with statistics that fit its weights.
    reported = logs["val_accuracy"][-1]
    assert reported == pytest.approx(_accuracy(trainer.model, x_test, y_test), abs=1e-6)
    if initial:
        x_train = np.concatenate([x for x, _ in clients.values()])
        recomputed = _accuracy(_with_statistics(trainer.model, x_train), x_test, y_test)
        assert recomputed > 0.5, "the run must learn for the comparison to mean something"
        # Local statistics lag the weights by design (a client's come from its last
        # rounds, with older weights), so the global model's mean of them fits less well.
        tolerance = 0.2 if trainer.bn_statistics == "local" else 0.1
        assert abs(reported - recomputed) < tolerance, (reported, recomputed)
        # The check can fail: the same weights with the initial statistics are far off.
        stale = tf.keras.models.clone_model(trainer.model)
        stale.set_weights(trainer.model.get_weights())
        for v in stale.non_trainable_variables:
            v.assign(initial[v.name.replace(stale.name, trainer.model.name, 1)])
        assert _accuracy(stale, x_test, y_test) < recomputed - 0.2


# ---- weighting: one round of two clients of 2 and 6 examples ---------------------------------


def _two_layers():
    return tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Dense(5, name="hidden"), tf.keras.layers.Dense(3)]
    )


def _numpy_step(weights, x, y, learning_rate):
    """−lr·∇ of the mean softmax cross-entropy of two linear layers, in float64."""
    w1, b1, w2, b2 = weights
    h = x @ w1 + b1
    logits = h @ w2 + b2
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    d_logits = p / len(y)
    d_h = d_logits @ w2.T
    grads = [x.T @ d_h, d_h.sum(axis=0), h.T @ d_logits, d_logits.sum(axis=0)]
    return [-learning_rate * g for g in grads]


WEIGHTING = {
    **{m: c for m, c in METHODS.items()},
    # Near-exact quantization, so that the mean itself can be checked.
    "fedpaq": dict(METHODS["fedpaq"], quantization_levels=2**20),
    "fedpaq+luar": dict(METHODS["fedpaq+luar"], quantization_levels=2**20),
}


@pytest.mark.parametrize("method", list(WEIGHTING))
def test_example_weighting_is_the_data_size_weighted_mean(method):
    rng = np.random.default_rng(0)
    sizes = {"a": 2, "b": 6}
    arrays = {
        cid: (rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32))
        for cid, n in sizes.items()
    }
    clients = {cid: tf.data.Dataset.from_tensor_slices(xy) for cid, xy in arrays.items()}
    # One step of plain SGD on a batch of 12: 6 (or 2) copies of every example, so the
    # step is the gradient of the client's mean loss whatever the shuffle.
    lr = 0.1
    trainer = _trainer(
        _two_layers, WEIGHTING[method], local_steps=1, batch_size=12,
        client_optimizer=tf.keras.optimizers.SGD(lr), client_weighting="example",
    )  # fmt: skip
    initial = [w.astype(np.float64) for w in trainer.model.get_weights()]
    trainer.fit(clients, rounds=1, clients_per_round=2, verbose=0)
    steps = {cid: _numpy_step(initial, *xy, lr) for cid, xy in arrays.items()}
    server_lr = 0.8 if trainer.algorithm == "fedopt" else 1.0

    def mean(weights):
        total = sum(weights.values())
        return [
            sum(weights[c] * steps[c][i] for c in steps) / total * server_lr
            for i in range(len(initial))
        ]

    expected = mean({c: float(n) for c, n in sizes.items()})
    uniform = mean({c: 1.0 for c in sizes})
    got = [w - w0 for w, w0 in zip(trainer.model.get_weights(), initial, strict=True)]
    for g, e, u in zip(got, expected, uniform, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
        assert np.abs(e - u).max() > 1e-3  # the check tells the two weightings apart
