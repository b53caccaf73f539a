"""Keras habits at the boundary: ordinary inputs work, or fail clearly before round 0."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tensorflow as tf
from test_trainer import (
    PER_ROUND,
    _arrays,
    _client_data,
    _comparable,
    _Interrupt,
    _model,
    _trainer,
)

import keras_luar
from keras_luar.training import console

# ---- pre-batched client data -----------------------------------------------------------


def _one_client_batched():
    """The issue's example: 10 examples of class 0, then 90 of class 1, batched by 10."""
    x = np.zeros((100, 4), np.float32)
    y = np.array([0] * 10 + [1] * 90, np.int32)
    return x, y


def _dense():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2, name="out")])


def _p_class_1(data, **kwargs):
    trainer = keras_luar.FederatedTrainer(
        _dense(), loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        algorithm="fedavg", local_steps=1, client_optimizer=tf.keras.optimizers.SGD(0.5),
        backend="tensorflow", seed=0, **kwargs,
    )  # fmt: skip
    trainer.fit(data, rounds=8, clients_per_round=1, verbose=0)
    logits = trainer.model(np.zeros((1, 4), np.float32)).numpy()
    return float(tf.nn.softmax(logits)[0, 1])


def test_pre_batched_data_uses_all_of_a_clients_batches_over_the_rounds():
    x, y = _one_client_batched()
    batched = _p_class_1([tf.data.Dataset.from_tensor_slices((x, y)).batch(10)])
    unbatched = _p_class_1([tf.data.Dataset.from_tensor_slices((x, y))], batch_size=10)
    # Only ever the first batch (all class 0) would push P(class 1) far below 0.5; the
    # data are 90% class 1, and 8 rounds of one batch see 8 of the 10 batches.
    assert batched > 0.6 and unbatched > 0.6, (batched, unbatched)


def test_pre_batched_rounds_continue_where_the_last_stopped_and_cycle():
    from keras_luar.training.client_data import RoundInputs, as_clients
    from keras_luar.training.data_checks import ModelSignature, check_clients

    x = np.arange(12, dtype=np.float32).reshape(12, 1).repeat(4, axis=1)
    y = np.zeros(12, np.int32)
    clients = as_clients([tf.data.Dataset.from_tensor_slices((x, y)).batch(3)])  # 4 batches
    check_clients(clients, ModelSignature(_dense(), sparse_labels=True))
    assert clients.batched and clients.counts == {"0": 4} and clients.sizes == {"0": 12}
    inputs = RoundInputs(clients, local_steps=3, batch_size=20, seed=5)
    seen = []
    for r in range(4):  # 12 batches: three passes over the 4 batches
        seen += [int(b[0][0, 0]) // 3 for b in inputs.dataset(0, r).as_numpy_iterator()]
        inputs.advance([0])
    assert inputs.cursors == {"0": 12}
    passes = [seen[0:4], seen[4:8], seen[8:12]]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes), seen  # every batch once per pass
    assert len({tuple(p) for p in passes}) > 1  # and each pass in its own order
    # The same seed, the same order; another seed, another.
    again = RoundInputs(clients, local_steps=12, batch_size=20, seed=5)
    assert [int(b[0][0, 0]) // 3 for b in again.dataset(0, 0).as_numpy_iterator()] == seen
    other = RoundInputs(clients, local_steps=12, batch_size=20, seed=6)
    assert [int(b[0][0, 0]) // 3 for b in other.dataset(0, 0).as_numpy_iterator()] != seen


def test_batch_size_with_pre_batched_data_is_refused():
    x, y = _arrays(30)
    data = [tf.data.Dataset.from_tensor_slices((x[i::3], y[i::3])).batch(4) for i in range(3)]
    with pytest.raises(ValueError, match=r"argument `batch_size`.*pre-batched.*batch_size=8"):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)


def test_pre_batched_run_resumes_with_its_cursors(tmp_path):
    x, y = _arrays(60)
    data = [tf.data.Dataset.from_tensor_slices((x[i::3], y[i::3])).batch(7) for i in range(3)]
    fit = dict(rounds=4, clients_per_round=2, verbose=0)
    full = _trainer(batch_size=None).fit(data, **fit)
    directory = str(tmp_path / "run")
    _trainer(batch_size=None).fit(data, checkpoint_dir=directory, **{**fit, "rounds": 2})
    resumed = _trainer(model=_model(seed=9), batch_size=None).fit(
        data, checkpoint_dir=directory, **fit
    )
    assert _comparable(resumed) == _comparable(full)


# ---- checks before round 0 -------------------------------------------------------------


class _NoRound(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise AssertionError("a round started")


@pytest.mark.parametrize(
    "validation,match",
    [
        ((np.zeros((5, 3), np.float32), np.zeros(5, np.int32)), r"validation_data.*shape \[4\]"),
        ((np.zeros((5, 4), np.float32), np.full(5, 7, np.int32)), r"validation_data.*label 7"),
        ((np.zeros((5, 4), np.float32), np.full(5, 1.5, np.float32)), r"whole-number.*1.5"),
    ],
)
def test_validation_data_is_checked_before_round_0(validation, match):
    with pytest.raises(ValueError, match=match):
        _trainer().fit(
            _client_data(), rounds=1, clients_per_round=2, validation_data=validation,
            callbacks=[_NoRound()], verbose=0,
        )  # fmt: skip


def test_float_labels_out_of_range_for_a_sparse_loss_name_the_client():
    x, y = _arrays(30)
    y = y.astype(np.float32)
    y[7] = 5.0
    data = {f"c{i}": (x[i::3], y[i::3]) for i in range(3)}
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*client 'c1' has the label 5"):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)


def test_one_hot_labels_need_a_categorical_loss():
    x, y = _arrays(30)
    one_hot = np.eye(3, dtype=np.float32)[y]
    data = [(x[i::3], one_hot[i::3]) for i in range(3)]
    with pytest.raises(ValueError, match=r"one class index per example.*shape \[3\]"):
        _trainer().fit(data, rounds=1, clients_per_round=2, verbose=0)
    trainer = _trainer(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
    assert len(trainer.fit(data, rounds=1, clients_per_round=2, verbose=0).history["loss"]) == 1


def _two_inputs():
    tf.keras.utils.set_random_seed(0)
    numeric = tf.keras.Input((4,), name="numeric")
    extra = tf.keras.Input((2,), name="extra")
    hidden = tf.keras.layers.Dense(6, activation="tanh", name="hidden")(
        tf.keras.layers.Concatenate()([numeric, extra])
    )
    return tf.keras.Model([numeric, extra], tf.keras.layers.Dense(3, name="out")(hidden))


def test_a_two_input_model_trains_on_dict_inputs_as_on_tuples():
    x, y = _arrays(60)
    e = x[:, :2] * 0.5
    as_tuple = [((x[i::3], e[i::3]), y[i::3]) for i in range(3)]
    as_dict = [({"extra": e[i::3], "numeric": x[i::3]}, y[i::3]) for i in range(3)]

    def run(data):
        return _comparable(
            _trainer(model=_two_inputs(), backend="tensorflow").fit(
                data, rounds=2, clients_per_round=2, verbose=0
            )
        )

    assert run(as_dict) == run(as_tuple)
    wrong = [({"numeric": x[i::3], "other": e[i::3]}, y[i::3]) for i in range(3)]
    with pytest.raises(ValueError, match=r"dict keyed by the model's input names.*'other'"):
        _trainer(model=_two_inputs()).fit(wrong, rounds=1, clients_per_round=2, verbose=0)


# ---- checkpoints, CSVLogger, Ctrl-C ----------------------------------------------------


def _auto_named_model():
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((4,)),
            tf.keras.layers.Dense(8, activation="tanh"),
            tf.keras.layers.Dense(3),
        ]
    )


def test_a_checkpoint_matches_the_same_architecture_built_again(tmp_path):
    directory = str(tmp_path / "run")
    first = _auto_named_model()
    _trainer(model=first).fit(_client_data(), rounds=1, clients_per_round=PER_ROUND, verbose=0,
                              checkpoint_dir=directory)  # fmt: skip
    second = _auto_named_model()  # Keras names it dense_<n+2>, dense_<n+3>
    assert second.layers[0].name != first.layers[0].name
    history = _trainer(model=second).fit(
        _client_data(), rounds=2, clients_per_round=PER_ROUND, verbose=0, checkpoint_dir=directory
    )
    assert len(history.history["loss"]) == 2  # resumed after round 1


def test_a_real_mismatch_lists_the_variables_that_differ(tmp_path):
    directory = str(tmp_path / "run")
    _trainer().fit(_client_data(), rounds=1, clients_per_round=PER_ROUND, verbose=0,
                   checkpoint_dir=directory)  # fmt: skip
    tf.keras.utils.set_random_seed(0)
    wider = tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Dense(9, activation="tanh", name="d1"),
         tf.keras.layers.Dense(6, activation="tanh", name="d2"), tf.keras.layers.Dense(3, name="out")]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"variable 0: d1/kernel \[4, 9\].*\[4, 8\].*name"):
        _trainer(model=wider).fit(_client_data(), rounds=2, clients_per_round=PER_ROUND,
                                  verbose=0, checkpoint_dir=directory)  # fmt: skip


def _rounds_in_csv(path):
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_csv_logger_keeps_the_earlier_rows_on_resume_and_ctrl_c_says_how(tmp_path, capsys):
    directory, path = str(tmp_path / "run"), str(tmp_path / "rounds.csv")
    fit = dict(rounds=4, clients_per_round=PER_ROUND, verbose=0, checkpoint_dir=directory)
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(
            _client_data(), callbacks=[tf.keras.callbacks.CSVLogger(path), _Interrupt(2)], **fit
        )
    err = capsys.readouterr().err
    assert "fit interrupted after round 2 of 4" in err and f"checkpoint_dir={directory!r}" in err
    assert len(err.strip().splitlines()) == 1
    assert _rounds_in_csv(path) == [0, 1]
    _trainer().fit(_client_data(), callbacks=[tf.keras.callbacks.CSVLogger(path)], **fit)
    assert _rounds_in_csv(path) == [0, 1, 2, 3]


def test_ctrl_c_without_a_checkpoint_says_how_to_make_runs_resumable(capsys):
    with pytest.raises(KeyboardInterrupt):
        _trainer().fit(_client_data(), rounds=3, clients_per_round=PER_ROUND, verbose=0,
                       callbacks=[_Interrupt(1)])  # fmt: skip
    assert "after round 1 of 3; pass checkpoint_dir=" in capsys.readouterr().err


# ---- smaller habits ----------------------------------------------------------------------


def test_fedavg_refuses_recycled_layers():
    with pytest.raises(ValueError, match=r"num_recycled_layers.*'fedavg'.*'fedluar'.*=2"):
        _trainer(algorithm="fedavg", num_recycled_layers=2)


def test_a_model_without_trainable_variables_is_refused_as_such():
    model = _model()
    model.trainable = False
    with pytest.raises(ValueError, match=r"argument `model`.*nothing to train"):
        _trainer(model=model, num_recycled_layers=None)


def test_the_default_delta_fits_small_models():
    tf.keras.utils.set_random_seed(0)
    two = tf.keras.Sequential(
        [tf.keras.Input((4,)), tf.keras.layers.Dense(5), tf.keras.layers.Dense(3)]
    )
    assert _trainer(model=two, num_recycled_layers=None).num_recycled_layers == 1
    one = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"argument `model`.*at least 2 candidate.*L=1.*'fedavg'"):
        _trainer(model=one, num_recycled_layers=None)


def test_the_progress_bar_shows_no_counters_in_e_notation(capsys):
    _trainer(algorithm="fedavg", num_recycled_layers=None).fit(
        _client_data(), rounds=2, clients_per_round=PER_ROUND, verbose=1
    )
    out = capsys.readouterr().out
    assert "e+00" not in out and "num_recycled" not in out and "comm_cost" in out


def test_slow_set_up_steps_are_announced_with_verbose_1(capsys, monkeypatch):
    monkeypatch.setattr(console, "ANNOUNCE_AFTER_SECONDS", 0.0)
    _trainer().fit(_client_data(), rounds=1, clients_per_round=PER_ROUND, verbose=1)
    out = capsys.readouterr().out
    assert "Building the TFF computations of FedLUAR..." in out
    _trainer().fit(_client_data(), rounds=1, clients_per_round=PER_ROUND, verbose=0)
    assert "Building" not in capsys.readouterr().out
