"""A trainer's configuration: every argument checked once, frozen, before anything is built.

`make_config` reads the method's `AlgorithmSpec` for everything that depends on
the method (its options, whether LUAR stacks, the default δ, its client
weighting, BatchNorm and server-optimizer rules), so no method is named here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from keras_luar._types import MIXED_PRECISION
from keras_luar._validation import (
    check_bn_statistics,
    check_choice,
    check_int,
    check_weighting,
    invalid,
)
from keras_luar.algorithms import registry
from keras_luar.algorithms.spec import AlgorithmSpec

DEFAULT_BATCH_SIZE = 20
DEFAULT_RECYCLED_LAYERS = 2


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The checked settings of a `FederatedTrainer` (see its docstring for each).

    Attributes:
      spec: The method's `AlgorithmSpec`.
      options: Its options, checked, with defaults.
      num_recycled_layers: δ (0 without LUAR).
      local_steps: τ.
      batch_size: B for unbatched data; None if not given (then 20).
      seed: The run seed.
      client_weighting: The resolved client weighting.
      bn_statistics: The resolved BatchNorm statistics rule.
      augmentation: ``fn(x, seed) -> x`` or None.
      backend: ``"tff"`` or ``"tensorflow"`` (resolved).
      parallel_clients: Clients trained at once in process.
      workers: Worker addresses, or None.
      mixed_precision: None or a Keras dtype policy name.
      client_optimizer: The clients' TFF optimizer.
      server_optimizer: The user's server optimizer as a TFF optimizer, or None.
      upload_budget: LUAR's upload budget b (instead of δ), or None.
      inner_aggregator: A TFF aggregation factory under LUAR, or None.
    """

    spec: AlgorithmSpec
    options: Mapping[str, Any]
    num_recycled_layers: int
    local_steps: int
    batch_size: int | None
    seed: int
    client_weighting: str
    bn_statistics: str
    augmentation: Callable | None
    backend: str
    parallel_clients: int
    workers: list[str] | None
    mixed_precision: str | None
    client_optimizer: Any
    server_optimizer: Any
    upload_budget: float | None = None
    inner_aggregator: Any = None

    @property
    def algorithm(self) -> str:
        """The method's name."""
        return self.spec.name

    @property
    def batch(self) -> int:
        """B for unbatched data."""
        return DEFAULT_BATCH_SIZE if self.batch_size is None else self.batch_size


def resolve_recycled_layers(spec: AlgorithmSpec, given: Any, layout: Any) -> int:
    """δ for `spec` on a model with `layout`; raises for a δ the method or model cannot take."""
    names = ", ".join(layout.candidate_names) or "none"
    num_candidates = layout.num_candidates
    if given is None:
        if spec.luar != "always":
            return 0
        if num_candidates < 2:
            raise invalid(
                "model",
                f"a model with at least 2 candidate layers for {spec.title}, which recycles "
                f"some of them every round; this one has L={num_candidates} ({names}). Use "
                "algorithm='fedavg', or a model with more kernels",
                f"a model with {num_candidates} candidate(s)",
            )
        # The default δ = 2 would recycle every layer of a model with two: one less.
        return min(DEFAULT_RECYCLED_LAYERS, num_candidates - 1)
    delta = check_int("num_recycled_layers", given, 0)
    if delta > 0 and spec.luar == "never":
        takes = ", ".join(n for n, s in registry.ALGORITHMS.items() if s.luar != "never")
        hint = " (FedAvg with δ > 0 is 'fedluar')" if spec.name == "fedavg" else ""
        raise invalid(
            "num_recycled_layers",
            f"0 for algorithm {spec.name!r}, which cannot use LUAR as its aggregation step"
            f"{hint}; those that can: {takes}",
            delta,
        )
    if delta > 0 and delta >= num_candidates:
        raise invalid(
            "num_recycled_layers",
            f"an int smaller than the model's number of candidate layers L={num_candidates} "
            f"({names})",
            delta,
        )
    return delta


def make_config(
    *,
    layout: Any,
    algorithm: str,
    algorithm_options: Mapping[str, Any],
    num_recycled_layers: Any,
    local_steps: Any,
    batch_size: Any,
    seed: Any,
    client_weighting: Any,
    bn_statistics: Any,
    augmentation: Any,
    backend: Any,
    parallel_clients: Any,
    workers: Any,
    mixed_precision: Any,
    client_optimizer: Any,
    server_optimizer: Any,
    upload_budget: Any = None,
    inner_aggregator: Any = None,
) -> TrainerConfig:
    """Checks every argument of `FederatedTrainer` (but the model, loss and metrics).

    Raises:
      TypeError / ValueError: Naming the argument, the value and what was expected.
    """
    from keras_luar import backends
    from keras_luar.optimizers import to_tff_optimizer

    spec, options = registry.resolve(algorithm, algorithm_options)
    if upload_budget is not None:
        upload_budget = _check_budget(spec, upload_budget, num_recycled_layers)
        num_recycled_layers = 0
    delta = resolve_recycled_layers(spec, num_recycled_layers, layout)
    weighting = spec.default_weighting(options) if client_weighting is None else client_weighting
    _check_inner_aggregator(spec, inner_aggregator, weighting)
    bn = spec.bn_statistics[0] if bn_statistics is None else bn_statistics
    check_bn_statistics(bn, spec.bn_statistics, f"algorithm {spec.name!r}")
    if augmentation is not None and not callable(augmentation):
        raise invalid(
            "augmentation",
            "None or a function (x, seed) -> x",
            type(augmentation).__name__,
            TypeError,
        )
    spec.check_server_optimizer(server_optimizer)
    if spec.check is not None:
        spec.check(options, server_optimizer is not None)
    if workers is not None:
        workers = backends.check_addresses(workers)
        if backend not in ("auto", "tensorflow"):
            raise invalid(
                "backend",
                "'auto' or 'tensorflow' with `workers` (rounds are driven in process and the "
                "clients' work runs on the workers)",
                backend,
            )
        backend = "tensorflow"
    resolved_backend = backends.resolve_backend(backend)
    if parallel_clients is None:
        parallel_clients = 2 if resolved_backend == "tensorflow" and workers is None else 1
    parallel_clients = check_int("parallel_clients", parallel_clients, 1)
    if parallel_clients > 1 and resolved_backend != "tensorflow":
        raise invalid(
            "parallel_clients",
            f"1: it applies to backend='tensorflow' only, and backend={backend!r} runs on "
            "TFF's runtime",
            parallel_clients,
        )
    if mixed_precision not in MIXED_PRECISION:
        raise invalid("mixed_precision", f"one of {MIXED_PRECISION}", mixed_precision)
    if client_optimizer is None:
        import tensorflow as tf

        client_optimizer = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    return TrainerConfig(
        spec=spec,
        options=options,
        num_recycled_layers=delta,
        local_steps=check_int("local_steps", local_steps, 1),
        batch_size=None if batch_size is None else check_int("batch_size", batch_size, 1),
        seed=check_int("seed", seed, 0),
        client_weighting=check_weighting("client_weighting", weighting),
        bn_statistics=bn,
        augmentation=augmentation,
        backend=check_choice("backend", resolved_backend, ("tff", "tensorflow")),
        parallel_clients=parallel_clients,
        workers=workers,
        mixed_precision=mixed_precision,
        client_optimizer=to_tff_optimizer(client_optimizer, "client_optimizer"),
        server_optimizer=None
        if server_optimizer is None
        else to_tff_optimizer(server_optimizer, "server_optimizer"),
        upload_budget=upload_budget,
        inner_aggregator=inner_aggregator,
    )


def _check_budget(spec: AlgorithmSpec, budget: Any, delta: Any) -> float:
    from keras_luar._validation import check_float

    if spec.luar == "never":
        raise invalid(
            "upload_budget",
            f"None for algorithm {spec.name!r}, which cannot use LUAR (use 'fedluar')",
            budget,
        )
    if delta is not None:
        raise invalid(
            "upload_budget",
            "None when `num_recycled_layers` is given (give one of the two)",
            budget,
        )
    value = check_float("upload_budget", budget, 0.0, 1.0, open_high=True)
    if value == 0.0:
        raise invalid("upload_budget", "a float in (0, 1)", budget)
    return value


def _check_inner_aggregator(spec: AlgorithmSpec, factory: Any, weighting: str) -> None:
    if factory is None:
        return
    from keras_luar._validation import check_inner_factory

    if not spec.inner_aggregator:
        takes = ", ".join(n for n, s in registry.ALGORITHMS.items() if s.inner_aggregator)
        raise invalid(
            "inner_aggregator",
            f"None for algorithm {spec.name!r}, whose aggregation takes no inner factory; "
            f"those that do: {takes}",
            type(factory).__name__,
        )
    _, weighted = check_inner_factory("inner_aggregator", factory)
    if not weighted and weighting != "uniform":
        raise invalid(
            "client_weighting",
            f"'uniform' with the unweighted inner_aggregator {type(factory).__name__}, "
            "which takes no client weights",
            weighting,
        )
