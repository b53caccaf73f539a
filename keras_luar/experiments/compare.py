"""Comparing federated methods on the embedded digits experiment.

`compare_methods` trains every method on every seed with the same client split,
the same initial weights and the same client sample in every round (all three
depend on the seed only), and gathers the results into a `ComparisonResult`: a
table in the shape of the paper's Table 1 (final accuracy mean ± std over seeds,
upload relative to FedAvg), a CSV, the per-round histories and an
accuracy-vs-communication plot. `keras-luar compare` is its command line, and
`keras-luar quickstart` its FedAvg-against-FedLUAR case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from keras_luar._validation import check_int
from keras_luar.experiments.digits import (
    DigitsSetup,
    RoundPrinter,
    digits_data,
    fit_digits,
    make_digits_trainer,
)
from keras_luar.experiments.methods import DEFAULT_METHODS, MethodSpec, parse_method_spec
from keras_luar.experiments.results import ComparisonResult


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
    on_round: Callable[[MethodSpec, int, int, dict, list, float], None] | None = None,
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
      on_round: Called as ``on_round(spec, seed, round, logs, recycled names,
        upload as a fraction of FedAvg's)`` after every round.

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
            callbacks = []
            if on_round is not None:
                callbacks.append(
                    RoundPrinter(
                        trainer,
                        setup.clients_per_round,
                        lambda r, logs, rec, frac, spec=spec, seed=seed: on_round(
                            spec, seed, r, logs, rec, frac
                        ),
                    )
                )
            history = fit_digits(trainer, setup, data, verbose=0, callbacks=callbacks)
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


def compare_on_digits(
    setup: DigitsSetup,
    *,
    num_recycled_layers: int,
    seed: int,
    on_round: Callable[[str, int, dict, list, float], None] | None = None,
) -> dict[str, Any]:
    """FedAvg and FedLUAR on the same split, client samples and initial weights.

    Args:
      setup: The experiment's settings.
      num_recycled_layers: FedLUAR's δ.
      seed: Seeds the split, the initial weights, the client sampling and LUAR.
      on_round: Called after every round with (method, round, logs, recycled
        names, upload as a fraction of FedAvg's).

    Returns:
      ``{"FedAvg": history, "FedLUAR": history}``.
    """
    forward = None
    if on_round is not None:

        def forward(spec, _seed, round_num, logs, recycled, fraction):
            on_round(spec.display_name, round_num, logs, recycled, fraction)

    result = compare_methods(
        ["fedavg", "fedluar"], seeds=[seed], setup=setup,
        num_recycled_layers=num_recycled_layers, on_round=forward,
    )  # fmt: skip
    return {label: runs[0] for label, runs in result.histories.items()}


def summarize(histories: list[dict[str, Any]]) -> dict[str, dict]:
    """Final accuracy, communication and time per method, as mean and std over seeds."""
    out = {}
    for name in histories[0]:
        final = np.array([h[name].history["val_accuracy"][-1] for h in histories])
        comm = np.array([h[name].history["comm_cost"][-1] for h in histories])
        seconds = np.array([np.sum(h[name].history["round_time"]) for h in histories])
        out[name] = {
            "accuracy_mean": float(final.mean()),
            "accuracy_std": float(final.std()),
            "comm_cost": float(comm.mean()),
            "seconds": float(seconds.mean()),
        }
    return out
