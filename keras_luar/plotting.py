"""Plots of federated training histories.

`plot_accuracy_vs_communication` draws a metric against the upload spent so far,
which is how communication-efficient methods are compared: a method is better
where its curve lies further up and to the left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

HistoryLike = Any  # a tf.keras.callbacks.History or its `.history` dict


def history_dict(history: HistoryLike) -> Mapping[str, Sequence]:
    """The per-round dict of a Keras `History`, or `history` itself if it is a mapping.

    Args:
      history: A `tf.keras.callbacks.History` or its ``.history`` dict.

    Returns:
      The mapping from log name to one value per round.

    Raises:
      TypeError: If `history` is neither.
    """
    if isinstance(history, Mapping):
        return history
    inner = getattr(history, "history", None)
    if isinstance(inner, Mapping):
        return inner
    raise TypeError(
        "Invalid value for argument `history`. Expected a tf.keras.callbacks.History or its "
        f"`.history` dict. Received: history of type {type(history).__name__}"
    )


def relative_cumulative_upload(history: HistoryLike) -> np.ndarray:
    """Upload spent after each round, as a fraction of FedAvg's upload over the whole run.

    `comm_cost[t]` in a `FederatedTrainer` History is a running ratio: the bytes
    uploaded in rounds 0..t over the bytes FedAvg uploads in t + 1 rounds. Plotted
    as it is, FedAvg would be a vertical line at 1. This function instead puts every
    round on one scale, FedAvg's total for the run's T rounds:

        x[t] = B[t] / (F · T),   B[t] = upload_bytes[0] + ... + upload_bytes[t],

    where F is FedAvg's upload per round. F is not stored, but the last entry gives
    it: comm_cost[T-1] = B[T-1] / (F · T), so F · T = B[T-1] / comm_cost[T-1] and

        x[t] = comm_cost[T-1] · B[t] / B[T-1].

    With a constant F this equals comm_cost[t] · (t + 1) / T. FedAvg then runs
    1/T, 2/T, ..., 1, and every curve ends at the run's final `comm_cost`, the
    number in the comparison table. A History without `upload_bytes`, or one that
    uploaded nothing, falls back to comm_cost[t] · (t + 1) / T.

    Args:
      history: A History (or its dict) with per-round ``comm_cost`` and,
        preferably, ``upload_bytes``.

    Returns:
      A float64 array with one value per round.

    Raises:
      ValueError: If the History has no ``comm_cost`` entries, or if its
        ``upload_bytes`` and ``comm_cost`` have different lengths.

    Examples:

    >>> relative_cumulative_upload({"upload_bytes": [100, 40, 60, 20],
    ...                             "comm_cost": [1.0, 0.7, 2 / 3, 0.55]}).round(4).tolist()
    [0.25, 0.35, 0.5, 0.55]
    """
    logs = history_dict(history)
    comm = np.asarray(logs.get("comm_cost", []), dtype=np.float64)
    if comm.size == 0:
        raise ValueError(
            "Invalid value for argument `history`. Expected per-round `comm_cost` entries, "
            f"as `FederatedTrainer.fit` records them. Received: keys {sorted(logs)}"
        )
    rounds = comm.size
    if "upload_bytes" in logs:
        uploaded = np.cumsum(np.asarray(logs["upload_bytes"], dtype=np.float64))
        if uploaded.size != rounds:
            raise ValueError(
                "Invalid value for argument `history`. Expected as many `upload_bytes` as "
                f"`comm_cost` entries. Received: {uploaded.size} and {rounds}"
            )
        if uploaded[-1] > 0:
            return comm[-1] * uploaded / uploaded[-1]
    return comm * np.arange(1, rounds + 1) / rounds


def _runs(value: HistoryLike | Sequence[HistoryLike]) -> list[Mapping[str, Sequence]]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [history_dict(h) for h in value]
    return [history_dict(value)]


def _metric_label(metric: str) -> str:
    name = metric.removeprefix("val_")
    words = ("validation " if metric.startswith("val_") else "") + name.replace("_", " ")
    return words[:1].upper() + words[1:]


def plot_accuracy_vs_communication(
    histories: Mapping[str, HistoryLike | Sequence[HistoryLike]],
    *,
    metric: str = "val_accuracy",
    ax: Any = None,
) -> Any:
    """Plots `metric` against the upload spent so far, one line per method.

    The x axis is `relative_cumulative_upload`: the upload after each round as a
    fraction of what FedAvg uploads over the same number of rounds, so FedAvg's
    curve ends at 1 and a method's curve ends at its final ``comm_cost``. With
    several runs of a method (one per seed), the line is the per-round mean of x
    and of the metric, and a shaded band spans the metric's mean ± std (numpy's
    population std, as in the comparison table).

    Args:
      histories: Maps a method name to a History (or its ``.history`` dict), or
        to a list of them, one per seed.
      metric: The per-round History entry on the y axis.
      ax: A matplotlib Axes to draw on; by default a new figure with seaborn's
        ``whitegrid`` style.

    Returns:
      The `matplotlib.figure.Figure` holding the plot.

    Raises:
      ValueError: If `histories` is empty, a History lacks `metric` or
        ``comm_cost``, or the runs of one method have different numbers of rounds.

    Examples:

    >>> fig = plot_accuracy_vs_communication({
    ...     "FedAvg": {"val_accuracy": [0.5, 0.8], "comm_cost": [1.0, 1.0],
    ...                "upload_bytes": [400.0, 400.0]},
    ...     "FedLUAR": {"val_accuracy": [0.5, 0.7], "comm_cost": [1.0, 0.75],
    ...                 "upload_bytes": [400.0, 200.0]}})
    >>> len(fig.axes[0].get_lines())
    2
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not histories:
        raise ValueError(
            "Invalid value for argument `histories`. Expected at least one method. "
            "Received: histories={}"
        )
    curves = []
    for name, value in histories.items():
        runs = _runs(value)
        if not runs:
            raise ValueError(
                f"Invalid value for argument `histories`. Expected at least one History for "
                f"{name!r}. Received: an empty list"
            )
        for logs in runs:
            if metric not in logs:
                raise ValueError(
                    f"Invalid value for argument `metric`. Expected a per-round entry of the "
                    f"History of {name!r} ({', '.join(sorted(logs))}). Received: metric={metric!r}"
                )
        lengths = sorted({len(logs[metric]) for logs in runs})
        if len(lengths) > 1:
            raise ValueError(
                f"Invalid value for argument `histories`. Expected the runs of {name!r} to "
                f"have the same number of rounds. Received: {lengths}"
            )
        x = np.mean([relative_cumulative_upload(logs) for logs in runs], axis=0)
        y = np.asarray([logs[metric] for logs in runs], dtype=np.float64)
        curves.append((name, x, y.mean(axis=0), y.std(axis=0), len(runs)))

    with sns.axes_style("whitegrid"):
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4.5))
        else:
            fig = ax.figure
        # Ten distinct colours at most in the default palette; beyond that tab20.
        palette = "tab10" if len(curves) <= 10 else "tab20"
        colors = sns.color_palette(palette, n_colors=len(curves))
        for (name, x, mean, std, num_runs), color in zip(curves, colors, strict=True):
            # One Line2D per method (the final round marked on it), so the legend and
            # the line count match the methods. Methods with LUAR on top are dashed.
            style = "--" if "+LUAR" in name else "-"
            ax.plot(
                x, mean, style, color=color, label=name, marker="o", markevery=[-1], linewidth=1.6
            )
            if num_runs > 1:
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ylabel = _metric_label(metric)
        ax.set_xlabel("Cumulative upload (fraction of FedAvg's total)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs. communication")
        ax.set_xlim(left=0)
        ax.legend(loc="lower right")
    return fig
