"""Writing a training History to CSV and JSON.

Rounds are numbered from 0, as Keras numbers epochs: row t of the CSV (its
``round`` column) and entry t of every JSON list are the round that
`tf.keras.callbacks.CSVLogger` writes as ``epoch`` t and that
`tf.keras.callbacks.LearningRateScheduler` is called with as t.
"""

from __future__ import annotations

import csv
import json
import os

import tensorflow as tf


def _rows(history: tf.keras.callbacks.History) -> tuple[list[str], list[dict]]:
    keys = list(history.history)
    rounds = max((len(v) for v in history.history.values()), default=0)
    rows = []
    for t in range(rounds):
        row = {"round": t}  # 0-based, like CSVLogger's `epoch`
        for key in keys:
            values = history.history[key]
            value = values[t] if t < len(values) else None
            if isinstance(value, list):
                value = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            row[key] = value
        rows.append(row)
    return ["round", *keys], rows


def write_history_csv(history: tf.keras.callbacks.History, path: str | os.PathLike) -> None:
    """Writes one row per round; list entries (`recycled_layers`, `aggregated`) are space-separated.

    The first column, ``round``, counts from 0 like the ``epoch`` column of
    `tf.keras.callbacks.CSVLogger`, so the two files of one run line up row by row.

    Args:
      history: A History returned by `FederatedTrainer.fit`.
      path: The CSV file to write.

    Example:

    >>> import os, tempfile
    >>> history = tf.keras.callbacks.History()
    >>> history.history = {"loss": [0.9, 0.5], "recycled_layers": [[], ["a/kernel", "b/kernel"]]}
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> write_history_csv(history, path)
    >>> print(open(path).read(), end="")
    round,loss,recycled_layers
    0,0.9,
    1,0.5,a/kernel b/kernel
    """
    fields, rows = _rows(history)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_history_json(history: tf.keras.callbacks.History, path: str | os.PathLike) -> None:
    """Writes ``{"history": {key: [one value per round]}}`` as JSON.

    Entry t of each list is round t, counted from 0 as in `write_history_csv`.

    Args:
      history: A History returned by `FederatedTrainer.fit`.
      path: The JSON file to write.

    Example:

    >>> import json, os, tempfile
    >>> history = tf.keras.callbacks.History()
    >>> history.history = {"loss": [0.9, 0.5], "comm_cost": [1.0, 0.75]}
    >>> path = os.path.join(tempfile.mkdtemp(), "history.json")
    >>> write_history_json(history, path)
    >>> json.load(open(path))["history"]["comm_cost"][0]  # round 0
    1.0
    """
    data = {
        k: [v.item() if hasattr(v, "item") else v for v in vs] for k, vs in history.history.items()
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"history": data}, f, indent=1)
