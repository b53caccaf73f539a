"""The History files number rounds as Keras numbers epochs: from 0."""

from __future__ import annotations

import csv
import json

import numpy as np
import tensorflow as tf

from keras_luar.history_io import write_history_csv, write_history_json


def test_csv_rounds_line_up_with_csvlogger_epochs(tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    callbacks = [
        tf.keras.callbacks.CSVLogger(str(tmp_path / "keras.csv")),
        tf.keras.callbacks.LearningRateScheduler(lambda epoch, lr: seen.append(epoch) or lr),
    ]
    x, y = np.ones((4, 2), np.float32), np.ones((4, 1), np.float32)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=callbacks)
    history.history["recycled_layers"] = [[], ["dense/kernel"], ["dense/kernel", "b"]]
    write_history_csv(history, tmp_path / "ours.csv")
    with open(tmp_path / "keras.csv", newline="") as f:
        keras_rows = list(csv.DictReader(f))
    with open(tmp_path / "ours.csv", newline="") as f:
        our_rows = list(csv.DictReader(f))
    assert [r["round"] for r in our_rows] == [r["epoch"] for r in keras_rows] == ["0", "1", "2"]
    assert [int(r["round"]) for r in our_rows] == seen  # the rounds the scheduler was given
    assert [float(r["loss"]) for r in our_rows] == [float(r["loss"]) for r in keras_rows]
    assert [r["recycled_layers"] for r in our_rows] == ["", "dense/kernel", "dense/kernel b"]


def test_json_holds_one_value_per_round_in_order(tmp_path):
    history = tf.keras.callbacks.History()
    history.history = {"comm_cost": [np.float32(1.0), 0.75], "recycled_layers": [[], ["a"]]}
    write_history_json(history, tmp_path / "h.json")
    data = json.loads((tmp_path / "h.json").read_text())
    assert data == {"history": {"comm_cost": [1.0, 0.75], "recycled_layers": [[], ["a"]]}}
