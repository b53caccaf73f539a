"""A comparison's results: the table in the shape of the paper's Table 1, CSV, JSON, plot."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_luar.experiments.digits import DigitsSetup
from keras_luar.plotting import HistoryLike, history_dict, plot_accuracy_vs_communication


@dataclasses.dataclass(frozen=True)
class MethodSummary:
    """One row of a comparison: a method's final results over seeds.

    Attributes:
      label: The method's row name (`MethodSpec.label`).
      accuracy_mean: Mean over seeds of the final ``val_accuracy`` (a fraction).
      accuracy_std: Its population standard deviation (numpy's default, ddof=0).
      comm_cost: Mean over seeds of the final ``comm_cost``: the run's upload
        relative to FedAvg's over the same rounds.
      train_seconds: Mean over seeds of the summed ``round_time`` of a run.
      num_seeds: The number of runs.
      rounds: Rounds of the shortest run.
    """

    label: str
    accuracy_mean: float
    accuracy_std: float
    comm_cost: float
    train_seconds: float
    num_seeds: int
    rounds: int


def _final(logs: Mapping[str, Sequence], key: str, label: str) -> float:
    values = logs.get(key)
    if not values:
        raise ValueError(
            f"Invalid value for argument `histories`. Expected per-round `{key}` entries in "
            f"every History of {label!r}. Received: keys {sorted(logs)}"
        )
    return float(values[-1])


def _builtin(value: Any) -> Any:
    """`json.dump`'s fallback: numpy scalars and arrays (also inside per-round lists)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Cannot write a {type(value).__name__} to JSON")


@dataclasses.dataclass
class ComparisonResult:
    """The histories of a comparison, with its table, CSV, JSON and plot.

    Attributes:
      histories: Maps a method's label to its runs, one History (or History
        dict) per seed, in the order of `seeds`.
      seeds: The seeds of the runs.
      num_recycled_layers: The δ of FedLUAR and of the ``+luar`` methods.
      specs: Maps a label to its method spec text (for the CSV and JSON).
      setup: The digits experiment's settings, if the runs came from it.

    Examples:

    >>> result = ComparisonResult({"FedAvg": [{"val_accuracy": [0.5, 0.9],
    ...     "comm_cost": [1.0, 1.0], "round_time": [1.0, 1.0]}]}, seeds=(0,))
    >>> result.summary()[0].accuracy_mean
    0.9
    """

    histories: dict[str, list[HistoryLike]]
    seeds: tuple[int, ...] = ()
    num_recycled_layers: int | None = None
    specs: dict[str, str] = dataclasses.field(default_factory=dict)
    setup: DigitsSetup | None = None

    def summary(self) -> list[MethodSummary]:
        """Final accuracy (mean, std), comm and time per method, in the order of `histories`.

        Returns:
          One `MethodSummary` per method.

        Raises:
          ValueError: If a method has no runs, or a run lacks ``val_accuracy`` or
            ``comm_cost``.
        """
        rows = []
        for label, runs in self.histories.items():
            logs = [history_dict(h) for h in runs]
            if not logs:
                raise ValueError(
                    "Invalid value for argument `histories`. Expected at least one History "
                    f"per method. Received: none for {label!r}"
                )
            accuracy = np.array([_final(h, "val_accuracy", label) for h in logs])
            comm = np.array([_final(h, "comm_cost", label) for h in logs])
            seconds = np.array([float(np.sum(h.get("round_time", [math.nan]))) for h in logs])
            rows.append(
                MethodSummary(
                    label=label,
                    accuracy_mean=float(accuracy.mean()),
                    accuracy_std=float(accuracy.std()),
                    comm_cost=float(comm.mean()),
                    train_seconds=float(seconds.mean()),
                    num_seeds=len(logs),
                    rounds=min(len(h["val_accuracy"]) for h in logs),
                )
            )
        return rows

    def to_markdown(self) -> str:
        """The comparison as a Markdown table in the shape of the paper's Table 1.

        Accuracy is the final ``val_accuracy`` in percent, mean ± std over seeds;
        Comm is the final ``comm_cost`` (mean over seeds), the upload relative to
        FedAvg's. A caption line follows the table.

        Returns:
          The Markdown text (no trailing newline).
        """
        rows = self.summary()
        lines = [
            "| Method | Accuracy (mean ± std, %) | Comm (relative to FedAvg) |",
            "| :-- | --: | --: |",
        ]
        for row in rows:
            accuracy = f"{100 * row.accuracy_mean:.2f} ± {100 * row.accuracy_std:.2f}"
            lines.append(f"| {row.label} | {accuracy} | {row.comm_cost:.2f} |")
        rounds = sorted({row.rounds for row in rows})
        after = f"after {rounds[0]} rounds" if len(rounds) == 1 else "after the last round"
        seeds = ", ".join(map(str, self.seeds)) if self.seeds else "the runs"
        caption = (
            f"Final validation accuracy {after}, mean ± std over seeds {seeds}. Comm: the upload "
            "of the whole run relative to FedAvg's."
        )
        if self.num_recycled_layers is not None:
            caption += f" LUAR recycles δ = {self.num_recycled_layers} layers per round."
        if self.setup is not None:
            caption += f" Model: the digits {self.setup.model.replace('_', ' ').upper()}."
        return "\n".join([*lines, "", caption])

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes one row per method: the `MethodSummary` fields and the method spec.

        Accuracy is written as a fraction (not percent), at full precision.

        Args:
          path: The CSV file to write.
        """
        fields = ["method", "spec", *[f.name for f in dataclasses.fields(MethodSummary)][1:]]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for row in self.summary():
                values = dataclasses.asdict(row)
                label = values.pop("label")
                writer.writerow({"method": label, "spec": self.specs.get(label, ""), **values})

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes every per-round History, with the seeds, δ, specs and setup, as JSON.

        The file holds ``{"seeds": [...], "num_recycled_layers": δ, "setup": {...},
        "methods": {label: {"spec": text, "histories": [one dict per seed]}}}``;
        `ComparisonResult.load` reads it back.

        Args:
          path: The JSON file to write.
        """
        data = {
            "seeds": list(self.seeds),
            "num_recycled_layers": self.num_recycled_layers,
            "setup": None if self.setup is None else dataclasses.asdict(self.setup),
            "methods": {
                label: {
                    "spec": self.specs.get(label, ""),
                    "histories": [dict(history_dict(h)) for h in runs],
                }
                for label, runs in self.histories.items()
            },
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=_builtin)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ComparisonResult:
        """Reads a result written by `to_json` (or `save`: pass the file or its folder).

        Args:
          path: ``histories.json``, or the folder that holds it.

        Returns:
          A `ComparisonResult` whose histories are plain dicts.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "histories.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        setup = data.get("setup")
        if setup is not None:
            setup["decay_at"] = tuple(setup["decay_at"])
            setup = DigitsSetup(**setup)
        methods = data["methods"]
        return cls(
            histories={label: list(m["histories"]) for label, m in methods.items()},
            seeds=tuple(data.get("seeds", ())),
            num_recycled_layers=data.get("num_recycled_layers"),
            specs={label: m.get("spec", "") for label, m in methods.items()},
            setup=setup,
        )

    def plot(self, *, metric: str = "val_accuracy", ax: Any = None) -> Any:
        """`plot_accuracy_vs_communication` of the histories (mean ± std over seeds).

        Args:
          metric: The per-round History entry on the y axis.
          ax: A matplotlib Axes to draw on, or None for a new figure.

        Returns:
          The matplotlib Figure.
        """
        return plot_accuracy_vs_communication(self.histories, metric=metric, ax=ax)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Writes ``compare.md``, ``compare.csv``, ``histories.json`` and ``compare.png``.

        Args:
          out_dir: The folder; created if missing, files in it are overwritten.

        Returns:
          Maps ``"markdown"``, ``"csv"``, ``"json"`` and ``"plot"`` to the paths written.
        """
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": out / "compare.md",
            "csv": out / "compare.csv",
            "json": out / "histories.json",
            "plot": out / "compare.png",
        }
        paths["markdown"].write_text(self.to_markdown() + "\n", encoding="utf-8")
        self.to_csv(paths["csv"])
        self.to_json(paths["json"])
        fig = self.plot()
        try:
            fig.savefig(paths["plot"], dpi=150, bbox_inches="tight")
        finally:
            plt.close(fig)
        return paths
