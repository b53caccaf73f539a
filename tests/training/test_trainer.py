"""FederatedTrainer: History structure, invariants, determinism, resume, callbacks, bad input."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar
from keras_luar.data import partition_iid
from keras_luar.quickstart import digits_cnn
from keras_luar.training.client_data import sample_clients

NUM_CLIENTS, ROUNDS, PER_ROUND = 6, 4, 3
TOTAL_PARAMS = 4 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3  # kernels 32, 48, 18 -> L = 3


def _model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(8, activation="tanh", name="d1"),
            tf.keras.layers.Dense(6, activation="tanh", name="d2"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )


def _arrays(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (np.argmax(x[:, :3], axis=1)).astype(np.int32)
    return x, y


def _client_data():
    x, y = _arrays()
    return (x, y, partition_iid(x, y, NUM_CLIENTS, seed=0))


def _trainer(model=None, **kwargs):
    options = dict(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        num_recycled_layers=1,
        local_steps=3,
        batch_size=8,
        client_optimizer=tf.keras.optimizers.SGD(0.1, momentum=0.9),
        seed=3,
    )
    options.update(kwargs)
    return keras_luar.FederatedTrainer(model or _model(), **options)


def _fit(trainer, **kwargs):
    options = dict(rounds=ROUNDS, clients_per_round=PER_ROUND, verbose=0)
    options.update(kwargs)
    return trainer.fit(_client_data(), **options)


def _round_inputs(trainer, client_data):
    """The trainer's round inputs of `client_data`, as `fit` makes them."""
    from keras_luar.training.client_data import RoundInputs, as_clients
    from keras_luar.training.data_checks import check_clients

    clients = as_clients(client_data)
    check_clients(clients, trainer.signature())
    return RoundInputs(
        clients, local_steps=trainer.local_steps, batch_size=trainer.batch_size,
        seed=trainer.seed, augmentation=trainer.augmentation,
    )  # fmt: skip


def _comparable(history):
    return {k: v for k, v in history.history.items() if k != "round_time"}


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def test_history_structure_and_accounting():
    trainer = _trainer()
    x, y = _arrays(60, seed=1)
    history = _fit(trainer, validation_data=(x, y))
    expected = {
        "loss", "accuracy", "val_loss", "val_accuracy", "upload_params", "upload_bytes",
        "comm_cost", "num_recycled", "num_dropped_clients", "round_time", "recycled_layers",
        "aggregated", "layer_scores",
    }  # fmt: skip
    assert set(history.history) == expected
    assert all(len(v) == ROUNDS for v in history.history.values())
    candidates = {"d1/kernel", "d2/kernel", "out/kernel"}
    assert history.history["recycled_layers"][0] == []
    sizes = {"d1/kernel": 32, "d2/kernel": 48, "out/kernel": 18}
    for t in range(1, ROUNDS):
        recycled = history.history["recycled_layers"][t]
        assert len(recycled) == 1 and set(recycled) <= candidates
        expected_upload = PER_ROUND * (TOTAL_PARAMS - sizes[recycled[0]])
        assert history.history["upload_params"][t] == expected_upload
        assert history.history["upload_bytes"][t] == 4 * expected_upload
    # Per trainable variable: 1 when its fresh aggregate was applied, 0 when recycled.
    names = [v.name for v in trainer.layout.trainable]
    for t in range(ROUNDS):
        row = history.history["aggregated"][t]
        assert row == [0.0 if n in history.history["recycled_layers"][t] else 1.0 for n in names]
    assert trainer.aggregation_counts == {
        n: sum(row[i] for row in history.history["aggregated"]) for i, n in enumerate(names)
    }
    assert sum(trainer.aggregation_counts.values()) == ROUNDS * len(names) - (ROUNDS - 1)
    for t in range(ROUNDS):
        sent = sum(history.history["upload_params"][: t + 1])
        assert history.history["comm_cost"][t] == pytest.approx(
            sent / ((t + 1) * PER_ROUND * TOTAL_PARAMS)
        )
    # After fit the Keras model holds the global weights and evaluates like model.evaluate.
    result = trainer.evaluate((x, y), return_dict=True, verbose=0)
    assert result["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)


class _WeightsPerRound(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.before, self.after = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.before.append(_weights(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self.after.append(_weights(self.model))


def test_layer_scores_are_update_to_weight_ratios_and_stay_stale_when_recycled():
    trainer = _trainer()
    seen = _WeightsPerRound()
    history = _fit(trainer, callbacks=[seen])
    names = [v.name for v in trainer.layout.trainable]
    candidates = trainer.layout.candidate_names
    scores = np.asarray(history.history["layer_scores"])
    assert scores.shape == (ROUNDS, len(candidates))
    for t in range(ROUNDS):
        recycled = history.history["recycled_layers"][t]
        for j, name in enumerate(candidates):
            if name in recycled:  # not refreshed: the score of the round before
                assert scores[t, j] == scores[t - 1, j]
            else:  # the server applies the mean update as is: x_{t+1} - x_t
                i = names.index(name)
                before, after = seen.before[t][i], seen.after[t][i]
                expected = np.linalg.norm(after - before) / (np.linalg.norm(before) + 1e-6)
                assert scores[t, j] == pytest.approx(expected, rel=1e-4)


def test_same_seed_same_history_and_weights():
    a, b = _trainer(), _trainer()
    history_a, history_b = _fit(a), _fit(b)
    assert _comparable(history_a) == _comparable(history_b)
    for wa, wb in zip(_weights(a.model), _weights(b.model), strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("backend", ["tff", "tensorflow"])
def test_fedavg_algorithm_is_tff_fedavg(backend):
    # TFF's stock FedAvg runs in TFF's runtime; on it, ours is bit for bit the same.
    # In process, the same arithmetic runs in this process's TensorFlow build, which
    # rounds a few last bits differently: equal within 1e-6.
    trainer = _trainer(algorithm="fedavg", num_recycled_layers=None, backend=backend)
    initial = tff.learning.models.ModelWeights.from_model(trainer.model)
    initial = tf.nest.map_structure(lambda v: v.numpy(), initial)
    history = _fit(trainer)
    assert history.history["comm_cost"][-1] == 1.0
    assert history.history["recycled_layers"] == [[]] * ROUNDS

    # The same rounds through TFF's stock FedAvg (mean aggregator, uniform weighting).
    inputs = _round_inputs(trainer, _client_data())
    spec = inputs.dataset(0, 0).element_spec

    def model_fn():
        return tff.learning.models.from_keras_model(
            _model(),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=spec,
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1, momentum=0.9),
        client_weighting=tff.learning.ClientWeighting.UNIFORM,
    )
    state = process.set_model_weights(process.initialize(), initial)
    for t in range(ROUNDS):
        chosen = sample_clients(trainer.seed, len(inputs.clients.ids), PER_ROUND, t)
        data = [inputs.dataset(int(i), t) for i in chosen]
        state = process.next(state, data).state
    reference = process.get_model_weights(state).trainable
    for got, want in zip(trainer.model.trainable_weights, reference, strict=True):
        if backend == "tff":
            np.testing.assert_array_equal(got.numpy(), want)
        else:
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


class _Interrupt(tf.keras.callbacks.Callback):
    def __init__(self, at_round):
        super().__init__()
        self.at_round = at_round

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_round:
            raise KeyboardInterrupt


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    full = _trainer()
    full_history = _fit(full, checkpoint_dir=str(tmp_path / "full"))

    directory = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _fit(_trainer(), checkpoint_dir=directory, callbacks=[_Interrupt(at_round=2)])
    resumed = _trainer(model=_model(seed=99))  # other initial weights: the checkpoint wins
    history = _fit(resumed, checkpoint_dir=directory)
    assert _comparable(history) == _comparable(full_history)
    for a, b in zip(_weights(full.model), _weights(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    _fit(_trainer(), rounds=1, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"checkpoint_dir.*num_recycled_layers"):
        _fit(_trainer(num_recycled_layers=2), rounds=2, checkpoint_dir=str(tmp_path))


def test_stock_keras_callbacks(tmp_path):
    x, y = _arrays(60, seed=1)
    csv_path = tmp_path / "log.csv"
    weights_path = tmp_path / "best.h5"
    stop = tf.keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1)
    callbacks = [
        tf.keras.callbacks.CSVLogger(str(csv_path)),
        tf.keras.callbacks.ModelCheckpoint(str(weights_path), save_weights_only=True),
        tf.keras.callbacks.TensorBoard(str(tmp_path / "tb")),
        stop,
    ]
    trainer = _trainer()
    history = _fit(trainer, rounds=6, validation_data=(x, y), callbacks=callbacks)
    assert len(history.history["loss"]) == 2  # EarlyStopping ended the run
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "comm_cost" in rows[0] and "val_accuracy" in rows[0]
    restored = _model(seed=5)
    restored.load_weights(str(weights_path))
    for a, b in zip(_weights(restored), _weights(trainer.model), strict=True):
        np.testing.assert_array_equal(a, b)
    events = [f for _, _, files in os.walk(tmp_path / "tb") for f in files]
    assert any(f.startswith("events.out") for f in events)


def test_learning_rate_scheduler_reaches_the_clients():
    # lr = 0 from round 1 on: FedAvg then leaves the weights exactly where round 0 put them.
    schedule = tf.keras.callbacks.LearningRateScheduler(lambda r, lr: 0.1 if r == 0 else 0.0)
    trainer = _trainer(algorithm="fedavg", num_recycled_layers=None)
    snapshots = []

    class Snap(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(_weights(self.model))

    history = _fit(trainer, callbacks=[schedule, Snap()])
    assert history.history["lr"] == pytest.approx([0.1, 0.0, 0.0, 0.0])
    assert any(
        not np.array_equal(a, b) for a, b in zip(_weights(_model()), snapshots[0], strict=True)
    )
    for later in snapshots[1:]:
        for a, b in zip(snapshots[0], later, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("form", ["list", "dict", "arrays", "federated", "clientdata", "batched"])
def test_client_data_forms(form):
    x, y, parts = _client_data()
    slices = [(x[p], y[p]) for p in parts]
    if form == "list":
        data = [tf.data.Dataset.from_tensor_slices(s) for s in slices]
    elif form == "arrays":  # {client: (x, y)}, as model.fit takes arrays
        data = {f"c{i}": s for i, s in enumerate(slices)}
    elif form == "dict":
        data = {f"c{i}": tf.data.Dataset.from_tensor_slices(s) for i, s in enumerate(slices)}
    elif form == "batched":
        data = [tf.data.Dataset.from_tensor_slices(s).batch(8) for s in slices]
        trainer = _trainer(batch_size=None)  # batched data keeps its own batches
    elif form == "federated":
        data = keras_luar.data.load_digits_federated(6, 0.5, seed=0)
    else:
        data = tff.simulation.datasets.TestClientData(
            {f"c{i}": {"x": s[0], "y": s[1]} for i, s in enumerate(slices)}
        ).preprocess(lambda ds: ds.map(lambda e: (e["x"], e["y"])))
    if form == "federated":
        model = digits_cnn()
        trainer = _trainer(model=model, num_recycled_layers=1)
    elif form != "batched":
        trainer = _trainer()
    history = trainer.fit(data, rounds=2, clients_per_round=2, verbose=0)
    assert len(history.history["loss"]) == 2


# ---- bad input, all raised before any round ------------------------------------------


def _datasets(x, y):
    return [tf.data.Dataset.from_tensor_slices((x[i::3], y[i::3])) for i in range(3)]


def test_empty_client_is_refused():
    x, y = _arrays(30)
    data = _datasets(x, y)
    data[1] = data[1].take(0)
    with pytest.raises(ValueError, match="client '1' is empty"):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)


def test_no_clients_is_refused():
    with pytest.raises(ValueError, match="at least one client"):
        _trainer().fit([], rounds=1, clients_per_round=1, verbose=0)


def test_mismatched_element_specs_are_refused():
    x, y = _arrays(30)
    data = _datasets(x, y)
    data[2] = tf.data.Dataset.from_tensor_slices((x[:5].astype(np.float64), y[:5]))
    with pytest.raises(ValueError, match="same element spec.*client '2' yields"):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)


def test_inputs_of_the_wrong_size_name_the_client_and_both_shapes():
    x, y = _arrays(30)
    data = _datasets(x, y)
    data[2] = tf.data.Dataset.from_tensor_slices((x[:5, :3], y[:5]))
    with pytest.raises(
        ValueError,
        match=r"x of shape \[4\] per example.*Received: client '2' has x of shape \[3\]",
    ):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)


@pytest.mark.parametrize("per_round", [0, 4])
def test_clients_per_round_out_of_range(per_round):
    x, y = _arrays(30)
    with pytest.raises(ValueError, match=f"clients_per_round={per_round}"):
        _trainer().fit(_datasets(x, y), rounds=1, clients_per_round=per_round, verbose=0)


def test_labels_outside_model_outputs_are_refused():
    x, y = _arrays(30)
    y = y.copy()
    y[4] = 3  # the model has 3 outputs: labels must be in [0, 3)
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*client '1' has the label 3\b"):
        _trainer().fit(_datasets(x, y), rounds=1, clients_per_round=2, verbose=0)


def test_non_finite_inputs_are_refused():
    x, y = _arrays(30)
    x = x.copy()
    x[5, 2] = np.inf
    with pytest.raises(ValueError, match="client '2' has NaN or Inf"):
        _trainer().fit(_datasets(x, y), rounds=1, clients_per_round=2, verbose=0)


def test_subclassed_model_is_refused_with_advice():
    class Net(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="Sequential or functional"):
        _trainer(model=model)


def test_model_without_candidates_refuses_recycling():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.LayerNormalization()])
    with pytest.raises(ValueError, match=r"L=0 \(none\)"):
        _trainer(model=model, num_recycled_layers=1)


def test_delta_not_below_candidates_names_them():
    with pytest.raises(ValueError, match=r"L=3 \(d1/kernel, d2/kernel, out/kernel\)"):
        _trainer(num_recycled_layers=3)


def test_unknown_algorithm_lists_known_ones():
    known = r"'fedavg', 'fedluar', 'fedlama', 'lbgm', 'fedpart', 'fedpaq', 'fedprox', 'fedopt'"
    with pytest.raises(ValueError, match=rf"one of \({known}\).*'fedsgd'"):
        _trainer(algorithm="fedsgd")


@pytest.mark.parametrize(
    "optimizer,match",
    [
        (tf.keras.optimizers.SGD(0.1, nesterov=True, momentum=0.9), "Nesterov"),
        (tf.keras.optimizers.Adam(amsgrad=True), "AMSGrad"),
        (tf.keras.optimizers.SGD(0.1, clipnorm=1.0), "clipnorm"),
        (
            tf.keras.optimizers.SGD(tf.keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)),
            "schedule",
        ),
        ("sgd", "client_optimizer"),
    ],
)
def test_unsupported_optimizers_are_refused(optimizer, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _trainer(client_optimizer=optimizer)


def test_bad_validation_data_fails_before_any_round():
    trainer = _trainer()
    before = _weights(trainer.model)
    with pytest.raises(TypeError, match="tf.data.Dataset or \\(x, y\\)"):
        _fit(trainer, validation_data="test.csv")
    for a, b in zip(before, _weights(trainer.model), strict=True):
        np.testing.assert_array_equal(a, b)  # no round ran


def test_client_data_in_memory_and_in_files_give_the_same_run():
    runs = {}
    for cache in ("memory", "files"):
        trainer = _trainer()
        runs[cache] = (_comparable(_fit(trainer, client_data_cache=cache)), _weights(trainer.model))
    assert runs["memory"][0] == runs["files"][0]
    for a, b in zip(runs["memory"][1], runs["files"][1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_client_data_cache():
    with pytest.raises(ValueError, match="client_data_cache='disk'"):
        _fit(_trainer(), client_data_cache="disk")


def test_a_model_with_two_inputs_trains_on_tuple_inputs():
    tf.keras.utils.set_random_seed(0)
    numeric = tf.keras.Input((3,), name="numeric")
    extra = tf.keras.Input((1,), name="extra")
    hidden = tf.keras.layers.Dense(8, activation="tanh", name="d1")(
        tf.keras.layers.Concatenate()([numeric, extra])
    )
    model = tf.keras.Model([numeric, extra], tf.keras.layers.Dense(3, name="out")(hidden))
    x, y = _arrays()
    parts = partition_iid(x, y, NUM_CLIENTS, seed=0)
    clients = [
        tf.data.Dataset.from_tensor_slices(((x[p, :3], x[p, 3:]), y[p])) for p in parts
    ]  # fmt: skip
    trainer = _trainer(model, num_recycled_layers=1)
    history = _fit_data(trainer, clients, validation_data=((x[:20, :3], x[:20, 3:]), y[:20]))
    assert len(history.history["val_accuracy"]) == ROUNDS
    assert history.history["recycled_layers"][0] == []
    # x must carry one tensor per model input.
    with pytest.raises(ValueError, match="Expected x to hold a tuple of 2 tensors or a dict"):
        _fit_data(
            _trainer(model), [tf.data.Dataset.from_tensor_slices((x[p], y[p])) for p in parts]
        )


def _fit_data(trainer, data, **kwargs):
    return trainer.fit(data, rounds=ROUNDS, clients_per_round=PER_ROUND, verbose=0, **kwargs)


def test_round_dataset_options_keep_the_batches_and_their_order():
    # The trainer switches tf.data's graph rewrites and autotuning off on client
    # data (they cost ~10 ms per client and round); the batches must not change.
    from keras_luar._keras_compat import global_seed
    from keras_luar.training.client_data import _shuffle_seed

    trainer = _trainer()
    x, y = _arrays(n=30)
    inputs = _round_inputs(trainer, [(x[:15], y[:15]), (x[15:], y[15:])])
    plain = tf.data.Dataset.from_tensor_slices((x[15:], y[15:]))
    for t in range(3):
        got_ds = inputs.dataset(1, t)
        assert got_ds.options().autotune.enabled is False
        with global_seed(trainer.seed):
            seed = tf.constant(_shuffle_seed(t, 1), tf.int64)
            want_ds = plain.shuffle(15, seed=seed).repeat().batch(trainer.batch_size)
        want = list(want_ds.take(trainer.local_steps).as_numpy_iterator())
        got = list(got_ds.as_numpy_iterator())
        assert len(got) == trainer.local_steps
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)


# ---- losses and metrics as model.compile takes them ----------------------------------


def _softmax_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Dense(6, activation="tanh", name="hidden"),
         tf.keras.layers.Dense(3, activation="softmax", name="probabilities")]
    )  # fmt: skip


@pytest.mark.parametrize(
    "loss",
    ["sparse_categorical_crossentropy", tf.keras.losses.sparse_categorical_crossentropy],
    ids=["name", "function"],
)
def test_losses_by_name_and_function_train_as_the_loss_object(loss):
    def run(loss):
        trainer = _trainer(model=_softmax_model(), loss=loss, metrics=["acc"], backend="tensorflow")
        return _comparable(_fit(trainer))

    assert run(loss) == run(tf.keras.losses.SparseCategoricalCrossentropy())


@pytest.mark.parametrize(
    "labels,outputs,metric",
    [
        ("sparse", 3, "accuracy"),
        ("one_hot", 3, "acc"),
        ("binary", 1, "accuracy"),
        ("sparse", 3, "ce"),
        ("one_hot", 3, "crossentropy"),
    ],
)
def test_metric_shortcuts_resolve_as_keras_compile_does(labels, outputs, metric):
    from keras_luar._keras_compat import metric_factories

    x = np.zeros((4, 4), np.float32)
    y = {
        "sparse": np.zeros(4, np.int32),
        "one_hot": np.eye(3, dtype=np.float32)[[0, 1, 2, 0]],
        "binary": np.ones((4, 1), np.float32),
    }[labels]
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(outputs)])
    model.compile(loss="mse", metrics=[metric])
    model.evaluate(x, y, verbose=0)  # Keras resolves its metrics on first use
    keras_fn = [m for m in model.metrics if m.name == metric][0]._fn
    (ours,) = metric_factories([metric], (None,) + y.shape[1:], (None, outputs))
    assert ours()._fn is keras_fn
    assert ours().name == metric


def test_bad_loss_and_metric_are_refused_with_their_argument():
    with pytest.raises(TypeError, match=r"argument `loss`.*no_such_loss"):
        _trainer(loss="no_such_loss")
    with pytest.raises(TypeError, match=r"argument `metrics`.*no_such_metric"):
        _trainer(metrics=["no_such_metric"])
