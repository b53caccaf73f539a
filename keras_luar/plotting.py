"""Plots of federated training histories.

`plot_accuracy_vs_communication` draws a metric against the upload spent so far,
which is how communication-efficient methods are compared: a method is better
where its curve lies further up and to the left. `plot_aggregation_counts`
shows how often each layer was aggregated fresh (the paper's Figure 3), and
`plot_recycling_timeline` shows a LUAR run's layer scores round by round with
the recycled layers marked. Each returns a matplotlib figure.
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
    # `val_` entries come from `fit(validation_data=...)`, which is a validation split in
    # some runs and the test split in others (the comparisons); "held-out" is true of both.
    name = metric.removeprefix("val_").replace("_", " ")
    words = f"held-out {name}" if metric.startswith("val_") else name
    return words[:1].upper() + words[1:]


def _palette(n: int) -> list:
    """`n` colours: tab10's ten hues; past ten, tab20's dark shades before its light ones."""
    import seaborn as sns

    if n <= 10:
        return sns.color_palette("tab10", n_colors=n)
    # tab20 in its own order pairs each hue with its light shade (blue, light blue, ...),
    # so neighbouring methods would get two shades of one hue.
    tab20 = sns.color_palette("tab20", n_colors=20)
    ordered = tab20[0::2] + tab20[1::2]
    return [ordered[k % len(ordered)] for k in range(n)]


def _line_colours(names: Sequence[str]) -> list:
    """One colour per method; ``X+LUAR`` takes the colour of ``X`` (its line is dashed)."""
    # A label may carry options after the name: "FedPAQ+LUAR (quantization_levels=16)".
    bases = [name.replace("+LUAR", "", 1) for name in names]
    unique = list(dict.fromkeys(bases))
    colour_of = dict(zip(unique, _palette(len(unique)), strict=True))
    return [colour_of[base] for base in bases]


def plot_accuracy_vs_communication(
    histories: Mapping[str, HistoryLike | Sequence[HistoryLike]],
    *,
    metric: str = "val_accuracy",
    ylabel: str | None = None,
    ax: Any = None,
) -> Any:
    """Plots `metric` against the upload spent so far, one line per method.

    The x axis is `relative_cumulative_upload`: the upload after each round as a
    fraction of what FedAvg uploads over the same number of rounds, so FedAvg's
    curve ends at 1 and a method's curve ends at its final ``comm_cost``. With
    several runs of a method (one per seed), the line is the per-round mean of x
    and of the metric, and a shaded band spans the metric's mean ± std (numpy's
    population std, as in the comparison table).

    Each method has its own colour, except that a method with LUAR on top
    (a name with ``+LUAR``, such as ``"FedProx+LUAR"``) is drawn dashed in the
    colour of the method under it (``"FedProx"``). The legend sits beside the
    axes, off the curves.

    Args:
      histories: Maps a method name to a History (or its ``.history`` dict), or
        to a list of them, one per seed.
      metric: The per-round History entry on the y axis.
      ylabel: The y axis label. None derives it from `metric`: ``val_accuracy``
        becomes "Held-out accuracy", since ``val_`` entries are measured on
        whatever `fit` got as ``validation_data`` (a validation or a test split).
        Pass "Test accuracy" when that is what it was.
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
    >>> fig.axes[0].get_ylabel()
    'Held-out accuracy'
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
        new_figure = ax is None
        if new_figure:
            fig, ax = plt.subplots(figsize=(8, 4.5))
        else:
            fig = ax.figure
        colours = _line_colours([name for name, *_ in curves])
        for (name, x, mean, std, num_runs), colour in zip(curves, colours, strict=True):
            # One Line2D per method (the final round marked on it), so the legend and
            # the line count match the methods.
            style = "--" if "+LUAR" in name else "-"
            ax.plot(
                x, mean, style, color=colour, label=name, marker="o", markevery=[-1], linewidth=1.6
            )
            if num_runs > 1:
                ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        ylabel = _metric_label(metric) if ylabel is None else ylabel
        ax.set_xlabel("Cumulative upload (fraction of FedAvg's total)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs. communication")
        ax.set_xlim(left=0)
        # Outside the axes: inside, with many methods, it would cover the curves.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if new_figure:  # a given Axes belongs to the caller's layout
            fig.tight_layout()
    return fig


def _aggregation_counts(name: str, value: Any) -> Mapping[str, float]:
    counts = getattr(value, "aggregation_counts", value)
    if not isinstance(counts, Mapping) or not counts:
        raise TypeError(
            "Invalid value for argument `counts`. Expected a FederatedTrainer or a non-empty "
            f"dict of variable name to count for {name!r}. Received: {type(value).__name__}"
        )
    return counts


def plot_aggregation_counts(
    counts: Mapping[str, Any],
    *,
    candidates_only: bool = True,
    ax: Any = None,
) -> Any:
    """Bars of how many rounds each layer was aggregated fresh, one colour per method.

    This is the paper's Figure 3: under FedAvg every layer is aggregated every
    round, while FedLUAR recycles some layers more often than others (those
    whose updates are small next to their weights). A recycled round does not
    count; LBGM's scalar sends count by the fraction of clients that sent in full.

    Args:
      counts: Maps a method name to a `FederatedTrainer` after `fit` (its
        ``aggregation_counts`` are read) or to such a dict of variable name to
        count. Every method must cover the same variables.
      candidates_only: Draw only the recycling candidates (trainable variables
        of rank >= 2, the layers FedLUAR can recycle), recognised from a
        trainer's layout or, for plain dicts, from a name ending in
        ``kernel``, ``embeddings`` or ``weight``. False draws every variable.
      ax: A matplotlib Axes to draw on; by default a new figure.

    Returns:
      The `matplotlib.figure.Figure` holding the plot.

    Raises:
      TypeError: If a value is neither a trainer nor a non-empty dict.
      ValueError: If `counts` is empty or the methods cover different variables.

    Examples:

    >>> fig = plot_aggregation_counts({
    ...     "FedAvg": {"conv/kernel": 30.0, "conv/bias": 30.0, "out/kernel": 30.0},
    ...     "FedLUAR": {"conv/kernel": 21.0, "conv/bias": 30.0, "out/kernel": 11.0}})
    >>> len(fig.axes[0].patches)  # 2 methods x 2 candidates (the bias is always sent)
    4
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    if not counts:
        raise ValueError(
            "Invalid value for argument `counts`. Expected at least one method. Received: {}"
        )
    tables = {name: _aggregation_counts(name, value) for name, value in counts.items()}
    names = list(next(iter(tables.values())))
    for method, table in tables.items():
        if sorted(table) != sorted(names):
            raise ValueError(
                "Invalid value for argument `counts`. Expected every method to cover the same "
                f"variables ({', '.join(names)}). Received for {method!r}: {', '.join(table)}"
            )
    if candidates_only:
        layouts = [getattr(v, "layout", None) for v in counts.values()]
        known = [lay for lay in layouts if lay is not None]
        if known:
            wanted = set(known[0].candidate_names)
        else:
            wanted = {n for n in names if n.rsplit("/", 1)[-1].split(":")[0]
                      in ("kernel", "embeddings", "weight", "recurrent_kernel")}  # fmt: skip
        names = [n for n in names if n in wanted] or names
    x = np.arange(len(names))
    width = 0.8 / len(tables)
    with sns.axes_style("whitegrid"):
        if ax is None:
            fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) * len(tables) + 2), 4.2))
        else:
            fig = ax.figure
        colors = _palette(len(tables))
        for k, ((method, table), color) in enumerate(zip(tables.items(), colors, strict=True)):
            offset = (k - (len(tables) - 1) / 2) * width
            ax.bar(x + offset, [table[n] for n in names], width, label=method, color=color)
        ax.set_xticks(x)
        ax.set_xticklabels(
            names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center"
        )
        ax.set_xlabel("Layer")
        ax.set_ylabel("Rounds aggregated fresh")
        ax.set_title("Per-layer aggregation counts")
        # Outside the axes: inside, it would cover the bars it explains.
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
    return fig


def plot_recycling_timeline(
    history: HistoryLike,
    *,
    layer_names: Sequence[str],
    ax: Any = None,
) -> Any:
    """Heatmap of each candidate layer's score over the rounds, recycled rounds marked.

    Rows are the candidate layers, columns the rounds. A cell's colour is the
    layer's score s_l = ||U_l|| / (||x_l|| + 1e-6) after that round (log
    scale, darker is lower, so more likely to be recycled next); a red cross marks
    the rounds in which the layer was recycled (its score then stays as it was,
    so a recycled stretch shows one flat colour).

    Args:
      history: A History (or its ``.history`` dict) of a LUAR run with
        ``layer_scores`` and ``recycled_layers`` entries.
      layer_names: The candidates' names in score order, i.e.
        ``trainer.layout.candidate_names``.
      ax: A matplotlib Axes to draw on; by default a new figure.

    Returns:
      The `matplotlib.figure.Figure` holding the plot.

    Raises:
      ValueError: If the History has no ``layer_scores``/``recycled_layers``
        entries or their width differs from ``len(layer_names)``.

    Examples:

    >>> fig = plot_recycling_timeline(
    ...     {"layer_scores": [[0.2, 0.01], [0.2, 0.03], [0.1, 0.03]],
    ...      "recycled_layers": [[], ["out/kernel"], ["conv/kernel"]]},
    ...     layer_names=["conv/kernel", "out/kernel"])
    >>> len(fig.axes[0].collections[-1].get_offsets())  # the two recycled cells
    2
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import LogNorm

    logs = history_dict(history)
    for key in ("layer_scores", "recycled_layers"):
        if key not in logs:
            raise ValueError(
                f"Invalid value for argument `history`. Expected a History of a LUAR run with "
                f"a {key!r} entry. Received entries: {', '.join(sorted(logs)) or 'none'}"
            )
    names = list(layer_names)
    scores = np.asarray(logs["layer_scores"], dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(names):
        raise ValueError(
            "Invalid value for argument `layer_names`. Expected one name per score "
            f"({scores.shape[-1] if scores.ndim == 2 else 0}). Received: {len(names)} names"
        )
    recycled = [(t, names.index(n)) for t, row in enumerate(logs["recycled_layers"]) for n in row]
    positive = scores[scores > 0]
    low, high = (positive.min(), positive.max()) if positive.size else (1e-6, 1.0)
    with sns.axes_style("white"):
        if ax is None:
            fig, ax = plt.subplots(
                figsize=(min(14.0, 3.0 + 0.25 * scores.shape[0]), 1.6 + 0.35 * len(names))
            )
        else:
            fig = ax.figure
        image = ax.imshow(
            np.where(scores > 0, scores, np.nan).T,
            aspect="auto",
            cmap="viridis",
            norm=LogNorm(vmin=low, vmax=max(high, low * 1.0001)),
            interpolation="nearest",
        )
        fig.colorbar(image, ax=ax, label="score (update / weight norm)")
        # Red shows on every viridis shade, and in the legend on a white background.
        ax.scatter(
            [t for t, _ in recycled], [j for _, j in recycled],
            marker="x", color="tab:red", s=28, linewidths=1.4, label="recycled",
        )  # fmt: skip
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names)
        ax.set_xlabel("Round")
        ax.set_title("Layer scores and recycled layers per round")
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.18), frameon=False)
        fig.tight_layout()
    return fig
