"""The algorithms `FederatedTrainer` can run, their options, and how each is built.

Each entry names a method, the keyword options it takes (with defaults) and
whether LUAR can be its aggregation step (``num_recycled_layers > 0``).
Options are checked here, when the trainer is constructed, so bad values fail
before any round runs; the builders check them again for direct TFF use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from keras_luar._validation import check_int


def _check_float(name: str, value: Any, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a float in [{low}, {high}]. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if not (low <= value <= high) or math.isnan(value):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a float in [{low}, {high}]. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected True or False. Received: {name}={value!r}"
        )
    return value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of {choices}. "
            f"Received: {name}={value!r}"
        )
    return value


def _check_groups(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, list | tuple):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected None or a list of groups, each a "
            f"list of variable names or indices. Received: {name}={value!r}"
        )
    return value


def _check_optional_bool(name: str, value: Any) -> bool | None:
    return None if value is None else _check_bool(name, value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "proximal_strength": lambda n, v: _check_float(n, v, 0.0),
    "quantization_levels": lambda n, v: check_int(n, v, 1),
    "requantize_aggregate": _check_optional_bool,
    "quantize_statistics": _check_bool,
    "server_momentum": lambda n, v: _check_float(n, v, 0.0, 0.999),
    "aggregation_interval": lambda n, v: check_int(n, v, 1),
    "fedavg_rounds": lambda n, v: check_int(n, v, 0),
    "lbgm_threshold": lambda n, v: None if v is None else _check_float(n, v, 0.0, 1.0),
    "lbgm_variant": lambda n, v: _check_choice(n, v, ("official", "paper")),
    "error_feedback": _check_bool,
    "warmup_rounds": lambda n, v: check_int(n, v, 0),
    "rounds_per_group": lambda n, v: check_int(n, v, 1),
    "full_rounds_between_cycles": lambda n, v: check_int(n, v, 0),
    "groups": _check_groups,
}


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """One algorithm the trainer can run.

    Attributes:
      name: The ``algorithm=`` string.
      title: Display name, e.g. ``"FedLAMA"``.
      options: Keyword options and their defaults.
      luar: Whether LUAR can be the aggregation step (δ > 0).
      client_weighting: Default client weighting of the averaged updates (see
        `keras_luar.algorithms.weighting`), the one the method's official code uses.
      reference: The paper the method comes from.
      bn_statistics: The BatchNorm statistics rules the method supports, its
        default first (see `keras_luar.algorithms.client_work`).
    """

    name: str
    title: str
    options: Mapping[str, Any]
    luar: bool
    client_weighting: str
    reference: str
    bn_statistics: tuple[str, ...] = ("average",)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec("fedavg", "FedAvg", {}, False, "uniform", "McMahan et al., AISTATS 2017"),
        AlgorithmSpec("fedluar", "FedLUAR", {}, True, "uniform", "Kim, Kang, Lee, 2025"),
        AlgorithmSpec(
            "fedprox",
            "FedProx",
            {"proximal_strength": 0.001},
            True,
            "uniform",
            "Li et al., MLSys 2020",
        ),
        AlgorithmSpec("fedopt", "FedOpt", {}, True, "uniform", "Reddi et al., ICLR 2021"),
        AlgorithmSpec(
            "fedpaq",
            "FedPAQ",
            {"quantization_levels": 16, "requantize_aggregate": None, "quantize_statistics": True},
            True,
            "uniform",
            "Reisizadeh et al., AISTATS 2020",
        ),
        AlgorithmSpec(
            "fedlama",
            "FedLAMA",
            {"aggregation_interval": 2, "fedavg_rounds": 8},
            False,
            "uniform",
            "Lee et al., AAAI 2023",
            ("average", "local"),
        ),
        AlgorithmSpec(
            "lbgm",
            "LBGM",
            {
                "lbgm_threshold": None,
                "error_feedback": False,
                "lbgm_variant": "official",
                "server_momentum": 0.0,
            },
            False,
            "example",
            "Azam et al., ICLR 2022",
        ),
        AlgorithmSpec(
            "fedpart",
            "FedPart",
            {
                "warmup_rounds": 5,
                "rounds_per_group": 2,
                "full_rounds_between_cycles": 5,
                "groups": None,
            },
            False,
            "example",
            "Wang et al., NeurIPS 2024",
            ("average", "local"),
        ),
    )  # fmt: skip
}


def resolve(algorithm: Any, options: Mapping[str, Any]) -> tuple[AlgorithmSpec, dict[str, Any]]:
    """Checks an algorithm name and its options; returns the spec and all options.

    Raises:
      ValueError: For an unknown algorithm (listing the known ones) or a bad value.
      TypeError: For an option the algorithm does not take, or a bad type.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Invalid value for argument `algorithm`. Expected one of {tuple(ALGORITHMS)}. "
            f"Received: algorithm={algorithm!r}"
        )
    spec = ALGORITHMS[algorithm]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        takes = ", ".join(spec.options) or "no options"
        raise TypeError(
            f"FederatedTrainer got option(s) {', '.join(map(repr, unknown))} that algorithm "
            f"{algorithm!r} does not take. It takes: {takes}."
        )
    resolved = dict(spec.options)
    for name, value in options.items():
        resolved[name] = _CHECKS[name](name, value)
    return spec, resolved
