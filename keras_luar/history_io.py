"""Writing a training History to CSV and JSON."""

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
        row = {"round": t + 1}
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

    Args:
      history: A History returned by `FederatedTrainer.fit`.
      path: The CSV file to write.
    """
    fields, rows = _rows(history)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_history_json(history: tf.keras.callbacks.History, path: str | os.PathLike) -> None:
    """Writes ``{"history": {key: [one value per round]}}`` as JSON.

    Args:
      history: A History returned by `FederatedTrainer.fit`.
      path: The JSON file to write.
    """
    data = {
        k: [v.item() if hasattr(v, "item") else v for v in vs] for k, vs in history.history.items()
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"history": data}, f, indent=1)
