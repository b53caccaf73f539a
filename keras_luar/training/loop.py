"""The round loop: sample, train, aggregate, report, call back, checkpoint, repeat.

One loop serves every method. A TFF learning process without client state is
wrapped (`as_stateful`) so that it looks like a process with client states that
holds none; the loop then keeps the states of a ``"client"`` process by client
id, those of a ``"slot"`` process by position in the round's list, and nothing
for the others.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar._keras_compat import EveryName
from keras_luar.algorithms.stateful import StatefulClientProcess, StatefulOutput
from keras_luar.training import console
from keras_luar.training.checkpoint import RoundCheckpoint
from keras_luar.training.client_data import RoundInputs, sample_clients
from keras_luar.training.report import RoundReport

# Shown in the History and to callbacks, not on the progress bar (integer counters
# that Keras's bar would print as 0.0000e+00, and byte counts).
_NOT_ON_THE_BAR = ("upload_params", "upload_bytes", "num_recycled", "num_dropped_clients")


class _Stateless:
    """A TFF `LearningProcess` with the interface of a `StatefulClientProcess`."""

    client_states_by = "none"
    client_period = 1

    def __init__(self, process: Any):
        self._process = process
        self.initialize = process.initialize
        self.get_model_weights = process.get_model_weights
        self.set_model_weights = process.set_model_weights
        self.get_hparams = process.get_hparams
        self.set_hparams = process.set_hparams

    def initial_client_state(self) -> None:
        return None

    def next(self, state: Any, data: list, client_states: list) -> StatefulOutput:
        output = self._process.next(state, data)
        return StatefulOutput(output.state, [None] * len(data), output.metrics)


def as_stateful(process: Any) -> Any:
    """`process` itself if it keeps client states, else wrapped to look as if it did."""
    return process if isinstance(process, StatefulClientProcess) else _Stateless(process)


@dataclasses.dataclass
class RunRecord:
    """What the trainer exposes about the run so far (readable from callbacks).

    Attributes:
      aggregation_counts: Per trainable variable, rounds in which its fresh
        aggregate was applied (fractional for LBGM's per-client decisions).
      last_recycled_layers: Names recycled in the round that just ended.
      rounds_done: Rounds completed (saved, with a checkpoint directory).
    """

    aggregation_counts: dict[str, float]
    last_recycled_layers: list[str] = dataclasses.field(default_factory=list)
    rounds_done: int = 0


def _keep_csv_rows(callbacks: list, start_round: int) -> None:
    """On resume, a CSVLogger keeps the rows of the rounds already done.

    Keras's CSVLogger truncates its file unless ``append=True``; it then also
    keeps rows of rounds that will run again after an interruption. Here the
    file is cut to the rounds before `start_round` and the logger appends.
    """
    for callback in callbacks:
        if not isinstance(callback, tf.keras.callbacks.CSVLogger):
            continue
        path = callback.filename
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f, delimiter=callback.sep))
            kept = rows[:1] + [
                r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) < start_round
            ]
            with open(path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f, delimiter=callback.sep).writerows(kept)
            callback.append = True


class RoundLoop:
    """Runs a process's rounds on a `RoundInputs`, with Keras's callbacks and History.

    Args:
      process: The method's process (see `as_stateful`).
      inputs: The clients' round inputs.
      model: The trainer's Keras model; it holds the global weights after every round.
      layout: Its `keras_luar.layers.ModelLayout`.
      seed: The run seed (client sampling).
      client_weighting: ``"example"`` sends each client's data set size along.
      record: The `RunRecord` to keep up to date.
    """

    def __init__(
        self, process, inputs: RoundInputs, *, model, layout, seed, client_weighting, record
    ):
        self.process = as_stateful(process)
        self.inputs = inputs
        self.model = model
        self.layout = layout
        self.seed = seed
        self.sized = client_weighting == "example"
        self.record = record

    def run(
        self,
        *,
        rounds: int,
        clients_per_round: int,
        validation_data: Any,
        callbacks: list,
        verbose: int,
        checkpoint: RoundCheckpoint | None,
    ) -> tf.keras.callbacks.History:
        """Runs rounds up to `rounds` (after those a checkpoint holds); returns the History."""
        process = self.process
        state = process.initialize()
        weights = tff.learning.models.ModelWeights.from_model(self.model)
        state = process.set_model_weights(
            state, tf.nest.map_structure(lambda v: v.numpy(), weights)
        )
        fresh_state = process.initial_client_state() if process.client_states_by != "none" else None
        client_states: dict[int, Any] = {}
        history_entries: dict[str, list] = {}
        start_round = 0
        if checkpoint is not None:
            restored = checkpoint.restore(state, fresh_state)  # templates of this process
            if restored is not None:
                state, start_round, history_entries, client_states, extra = restored
                self.inputs.cursors = dict(extra.get("cursors", {}))
                process.get_model_weights(state).assign_weights_to(self.model)
                _keep_csv_rows(callbacks, start_round)
        history = tf.keras.callbacks.History()
        callback_list = tf.keras.callbacks.CallbackList(
            list(callbacks) + [history], add_history=False, add_progbar=False, model=self.model
        )
        history.history = {k: list(v) for k, v in history_entries.items()}
        record = self.record
        record.rounds_done = start_round
        for row in history.history.get("aggregated", []):
            for name, value in zip(record.aggregation_counts, row, strict=True):
                record.aggregation_counts[name] += float(value)
        progbar = None
        if verbose == 1:
            progbar = tf.keras.utils.Progbar(rounds, verbose=1, unit_name="round")
            progbar.stateful_metrics = EveryName()  # the constructor would copy it to a set
            if start_round:
                progbar.update(start_round)
        fedavg_bytes = self.layout.trainable_bytes
        uploaded = float(np.sum(history.history.get("upload_bytes", [])))
        fedavg_uploaded = float(start_round * clients_per_round * fedavg_bytes)
        client_lr = _client_learning_rate(process, state)
        num_clients = len(self.inputs.clients.ids)
        self.model.stop_training = False
        callback_list.on_train_begin()
        try:
            for round_num in range(start_round, rounds):
                callback_list.on_epoch_begin(round_num)
                state, client_lr = self._sync_learning_rate(state, client_lr)
                began = time.perf_counter()
                # Methods that keep clients for several rounds (FedLAMA) re-sample only
                # at the start of each period.
                period = process.client_period
                chosen = sample_clients(
                    self.seed, num_clients, clients_per_round, round_num - round_num % period
                )
                data = self.inputs.round_data(chosen, round_num, sized=self.sized)
                keys = [int(i) for i in chosen]
                if process.client_states_by == "slot":
                    keys = list(range(len(chosen)))
                output = process.next(
                    state, data, [client_states.get(k, fresh_state) for k in keys]
                )
                if process.client_states_by != "none":
                    client_states.update(zip(keys, output.client_states, strict=True))
                self.inputs.advance(chosen)
                state = output.state
                process.get_model_weights(state).assign_weights_to(self.model)
                round_time = time.perf_counter() - began
                report = RoundReport.from_metrics(output.metrics, self.layout)
                uploaded += report.upload_bytes
                fedavg_uploaded += float(clients_per_round * fedavg_bytes)
                logs = report.logs(comm_cost=uploaded / fedavg_uploaded, round_time=round_time)
                if validation_data is not None:
                    val = self.model.evaluate(validation_data, verbose=0, return_dict=True)
                    logs.update({f"val_{k}": float(v) for k, v in val.items()})
                record.last_recycled_layers = report.recycled
                for name, value in zip(record.aggregation_counts, report.aggregated, strict=True):
                    record.aggregation_counts[name] += value
                callback_list.on_epoch_end(round_num, logs)
                for key, value in report.history_entries().items():
                    history.history.setdefault(key, []).append(value)
                if checkpoint is not None:
                    extra = {"cursors": self.inputs.cursors}
                    checkpoint.save(state, round_num + 1, history.history, client_states, extra)
                record.rounds_done = round_num + 1
                _show(progbar, verbose, round_num, rounds, logs)
                if self.model.stop_training:
                    break
        except KeyboardInterrupt:
            console.interrupted(
                record.rounds_done, rounds, None if checkpoint is None else checkpoint.directory
            )
            raise
        finally:
            callback_list.on_train_end()
        return history

    def _sync_learning_rate(self, state, current):
        """Pushes the Keras optimizer's learning rate (set by callbacks) into TFF.

        `current` is the client learning rate held in `state` (None if the client
        optimizer has none). TFF is only called when a callback changed the rate.
        """
        lr = float(np.float32(tf.keras.backend.get_value(self.model.optimizer.learning_rate)))
        if current is None or lr == current:
            return state, current
        hparams = self.process.get_hparams(state)
        hparams["client_work"]["learning_rate"] = np.float32(lr)
        return self.process.set_hparams(state, hparams), lr


def _client_learning_rate(process, state):
    lr = process.get_hparams(state).get("client_work", {}).get("learning_rate")
    return None if lr is None else float(np.float32(lr))


def _show(progbar, verbose, round_num, rounds, logs):
    shown = [(k, v) for k, v in logs.items() if k not in _NOT_ON_THE_BAR]
    if progbar is not None:
        progbar.update(round_num + 1, values=shown, finalize=round_num + 1 == rounds)
    elif verbose == 2:
        text = " - ".join(
            f"{k}: {v:.4g}" for k, v in logs.items() if k not in ("upload_params", "upload_bytes")
        )
        print(f"Round {round_num + 1}/{rounds} - {text}", flush=True)
