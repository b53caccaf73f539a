"""Comparing federated methods on the embedded digits experiment.

`compare_methods` trains every method on every seed with the same client split,
the same initial weights and the same client sample in every round (all three
depend on the seed only), and gathers the results into a `ComparisonResult`: a
table in the shape of the paper's Table 1 (final accuracy mean ± std over seeds,
upload relative to FedAvg), a CSV, the per-round histories and an
accuracy-vs-communication plot. `keras-luar compare` is its command line.

Methods are named by short specs such as ``"fedprox+luar:proximal_strength=0.01"``;
see `parse_method_spec`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_luar._validation import check_int
from keras_luar.algorithms.registry import ALGORITHMS
from keras_luar.plotting import HistoryLike, history_dict, plot_accuracy_vs_communication
from keras_luar.quickstart import DigitsSetup, digits_data, fit_digits, make_digits_trainer

# Algorithm name -> the name the table prints (from the registry).
KNOWN_METHODS: dict[str, str] = {name: spec.title for name, spec in ALGORITHMS.items()}
# The methods that LUAR can be stacked on (`+luar`), as in the paper's Tables 3-4.
LUAR_COMPATIBLE: tuple[str, ...] = tuple(
    name for name, spec in ALGORITHMS.items() if spec.luar == "optional"
)
# Options a method gets in the comparison unless a spec sets them: each method's
# `comparison_options` (the paper's FEMNIST settings, which suit the small digits CNN).
DEFAULT_OPTIONS: dict[str, dict] = {
    name: dict(spec.comparison_options)
    for name, spec in ALGORITHMS.items()
    if spec.comparison_options
}
# Every method, in the order the table lists them: plain methods first, then each
# method that LUAR stacks on, alone and with LUAR.
DEFAULT_METHODS: tuple[str, ...] = tuple(
    [n for n, s in ALGORITHMS.items() if s.in_comparison and s.luar != "optional"]
    + [m for n in LUAR_COMPATIBLE if ALGORITHMS[n].in_comparison for m in (n, f"{n}+luar")]
)


def _registered() -> tuple[dict[str, str], tuple[str, ...]]:
    """The methods and `+luar` ones now registered (a method may be added at run time)."""
    known = {name: spec.title for name, spec in ALGORITHMS.items()}
    luar = tuple(name for name, spec in ALGORITHMS.items() if spec.luar == "optional")
    return known, luar


# Trainer arguments the comparison itself sets; a spec may not override them.
_RESERVED_OPTIONS = (
    "model",
    "loss",
    "metrics",
    "algorithm",
    "num_recycled_layers",
    "local_steps",
    "batch_size",
    "client_optimizer",
    "server_optimizer",
    "seed",
    "num_classes",
)

OptionValue = int | float | str | bool


def _spec_error(spec: str, expected: str) -> ValueError:
    return ValueError(
        f"Invalid value for argument `spec`. Expected {expected}. Received: spec={spec!r}"
    )


def _check_method(
    spec: str, algorithm: str, luar: bool, options: Sequence[tuple[str, Any]]
) -> None:
    """Raises for an unknown algorithm, a `+luar` it cannot take, or a bad option name."""
    known, luar_compatible = _registered()
    if algorithm not in known:
        raise _spec_error(spec, f"a method name, one of {', '.join(known)}")
    if luar and algorithm not in luar_compatible:
        why = (
            "it is LUAR already" if ALGORITHMS[algorithm].luar == "always" else "it cannot take it"
        )
        raise _spec_error(
            spec, f"`+luar` only on {', '.join(luar_compatible)} ({known[algorithm]}: {why})"
        )
    names = [name for name, _ in options]
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise _spec_error(spec, f"option names that are Python identifiers, not {name!r}")
        if name in _RESERVED_OPTIONS:
            hint = (
                "; δ is the comparison's num_recycled_layers, used by fedluar and `+luar`"
                if name == "num_recycled_layers"
                else ""
            )
            raise _spec_error(
                spec, f"no option `{name}`, which the comparison sets for every method{hint}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _spec_error(spec, f"each option once; given more than once: {', '.join(repeated)}")


def _parse_value(text: str) -> OptionValue:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of a comparison: an algorithm, LUAR on top or not, and its options.

    Construct it directly or with `parse_method_spec`; both check the algorithm,
    `luar` and the option names.

    Attributes:
      algorithm: One of `KNOWN_METHODS` (``"fedavg"``, ``"fedluar"``, ...).
      luar: Stack LUAR on top (δ = the comparison's ``num_recycled_layers``);
        only for ``"fedprox"``, ``"fedopt"`` and ``"fedpaq"``.
      options: ``(name, value)`` pairs given by the user; `trainer_options` adds
        `DEFAULT_OPTIONS` for the ones not given.

    Raises:
      ValueError: As `parse_method_spec`.

    Examples:

    >>> spec = MethodSpec("fedpaq", luar=True, options=(("quantization_levels", 16),))
    >>> spec.display_name, spec.label, str(spec)
    ('FedPAQ+LUAR', 'FedPAQ+LUAR (quantization_levels=16)', 'fedpaq+luar:quantization_levels=16')
    """

    algorithm: str
    luar: bool = False
    options: tuple[tuple[str, OptionValue], ...] = ()

    def __post_init__(self):
        _check_method(str(self), self.algorithm, self.luar, self.options)

    def __str__(self) -> str:
        text = self.algorithm + ("+luar" if self.luar else "")
        if self.options:
            text += ":" + ",".join(f"{k}={v}" for k, v in self.options)
        return text

    @property
    def display_name(self) -> str:
        """The method's name in the paper's style, e.g. ``"FedProx+LUAR"``."""
        return ALGORITHMS[self.algorithm].title + ("+LUAR" if self.luar else "")

    @property
    def label(self) -> str:
        """`display_name`, then the options given, if any: the method's row in the table."""
        if not self.options:
            return self.display_name
        return f"{self.display_name} ({', '.join(f'{k}={v}' for k, v in self.options)})"

    @property
    def uses_luar(self) -> bool:
        """Whether the method recycles layers (FedLUAR, or ``+luar``)."""
        return self.luar or ALGORITHMS[self.algorithm].luar == "always"

    def trainer_options(self) -> dict[str, OptionValue]:
        """The algorithm's `DEFAULT_OPTIONS`, updated with the options of the spec."""
        defaults = dict(ALGORITHMS[self.algorithm].comparison_options)
        return {**defaults, **dict(self.options)}


def parse_method_spec(spec: str | MethodSpec) -> MethodSpec:
    """Parses ``name[+luar][:key=value,key=value]`` into a `MethodSpec`.

    `name` is one of `KNOWN_METHODS`. ``+luar`` stacks LUAR, with the
    comparison's δ, on FedProx, FedOpt or FedPAQ. Options go to
    `FederatedTrainer` as keyword arguments, which rejects the ones it does not
    know; a value becomes an int, else a float, else a bool (``true`` /
    ``false``), else stays a string. ``server_learning_rate=η`` gives the method
    a Keras SGD server optimizer with learning rate η. The name and ``+luar``
    are not case sensitive.

    Args:
      spec: The text, or a `MethodSpec` (returned as it is).

    Returns:
      The `MethodSpec`.

    Raises:
      ValueError: For an unknown name (the message lists the known ones),
        ``+luar`` on a method that cannot take it (the message lists those that
        can), another suffix, or an option that is malformed, repeated, or set
        by the comparison itself (such as ``seed`` or ``num_recycled_layers``).
      TypeError: If `spec` is neither a str nor a `MethodSpec`.

    Examples:

    >>> parse_method_spec("fedprox+luar:proximal_strength=0.01").label
    'FedProx+LUAR (proximal_strength=0.01)'
    >>> parse_method_spec("FedOpt").trainer_options()
    {'server_learning_rate': 1.2}
    """
    if isinstance(spec, MethodSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            "Invalid value for argument `spec`. Expected a str such as 'fedprox+luar'. "
            f"Received: spec of type {type(spec).__name__}"
        )
    head, colon, tail = spec.strip().partition(":")
    name, plus, suffix = (part.strip() for part in head.lower().partition("+"))
    if plus and suffix != "luar":
        raise _spec_error(spec, "nothing or `+luar` after the method name")
    options = []
    if colon:
        for item in tail.split(","):
            key, equals, value = (part.strip() for part in item.partition("="))
            if not (key and equals and value):
                raise _spec_error(spec, f"options as key=value separated by commas, not {item!r}")
            options.append((key, _parse_value(value)))
    _check_method(spec, name, bool(plus), options)  # quotes the text as the user typed it
    return MethodSpec(name, luar=bool(plus), options=tuple(options))


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


def _make_trainer(spec: MethodSpec, setup: DigitsSetup, delta: int, seed: int, num_classes: int):
    options = spec.trainer_options()
    server_learning_rate = options.pop("server_learning_rate", None)
    return make_digits_trainer(
        setup,
        algorithm=spec.algorithm,
        num_recycled_layers=delta if spec.uses_luar else 0,
        seed=seed,
        server_learning_rate=server_learning_rate,
        num_classes=num_classes,
        **options,
    )


def compare_methods(
    methods: Sequence[str | MethodSpec] | None = None,
    *,
    seeds: Sequence[int],
    setup: DigitsSetup | None = None,
    num_recycled_layers: int = 2,
    on_result: Callable[[MethodSpec, int, Any], None] | None = None,
) -> ComparisonResult:
    """Trains each method on each seed on the digits experiment; returns the comparison.

    For one seed, every method gets the same client split, the same initial
    weights and the same client sample in every round, so the methods differ
    only in what they do with the updates. The trainers of a seed are all built
    before the first one trains: a bad option (`FederatedTrainer` raises
    `TypeError` for one it does not know) or a δ the model cannot take fails
    before any training.

    Args:
      methods: Method specs (see `parse_method_spec`) or `MethodSpec`s, or a
        single one; None runs `DEFAULT_METHODS`.
      seeds: One run of every method per seed.
      setup: The experiment's settings; None for `DigitsSetup()`, the quickstart's.
      num_recycled_layers: δ for FedLUAR and for the ``+luar`` methods.
      on_result: Called as ``on_result(spec, seed, history)`` after each run.

    Returns:
      A `ComparisonResult` with one History per method and seed.

    Raises:
      ValueError: For a bad spec, a method given twice, no methods, no or
        repeated seeds, or a δ the model cannot take; `fit` raises for bad
        setup values (such as more clients per round than clients) before its
        first round.
      TypeError: For an option the trainer does not know.

    Examples:

    >>> result = compare_methods(["fedavg", "fedluar"], seeds=[0],
    ...                          setup=DigitsSetup(rounds=2))  # doctest: +SKIP
    >>> print(result.to_markdown())  # doctest: +SKIP

    References:
      Kim, Kang & Lee (2025), "Layer-wise Update Aggregation with Recycling for
      Communication-Efficient Federated Learning", Table 1.
    """
    if methods is None:
        methods = DEFAULT_METHODS
    elif isinstance(methods, str | MethodSpec):
        methods = [methods]  # one method, not the characters of its spec
    specs = [parse_method_spec(m) for m in methods]
    if not specs:
        raise ValueError(
            "Invalid value for argument `methods`. Expected at least one method. "
            f"Received: methods={methods!r}"
        )
    labels = [spec.label for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            "Invalid value for argument `methods`. Expected each method once. "
            f"Received: {', '.join(repeated)} more than once"
        )
    seeds = tuple(check_int("seeds", seed, 0) for seed in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(
            "Invalid value for argument `seeds`. Expected one or more different seeds. "
            f"Received: seeds={list(seeds)}"
        )
    delta = check_int("num_recycled_layers", num_recycled_layers, 0)
    setup = DigitsSetup() if setup is None else setup
    histories: dict[str, list] = {label: [] for label in labels}
    for seed in seeds:
        data = digits_data(setup, seed)
        trainers = [_make_trainer(spec, setup, delta, seed, data.num_classes) for spec in specs]
        for spec, trainer in zip(specs, trainers, strict=True):
            history = fit_digits(trainer, setup, data, verbose=0)
            histories[spec.label].append(history)
            if on_result is not None:
                on_result(spec, seed, history)
    return ComparisonResult(
        histories=histories,
        seeds=seeds,
        num_recycled_layers=delta,
        specs={spec.label: str(spec) for spec in specs},
        setup=setup,
    )
