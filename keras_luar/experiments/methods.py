"""A comparison's methods: ``name[+luar][:key=value,...]`` specs, read off the registry.

Methods are named by short specs such as ``"fedprox+luar:proximal_strength=0.01"``
(see `parse_method_spec`); what a method is, which options it takes and what the
comparison gives it come from its `AlgorithmSpec` in the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from keras_luar.algorithms.registry import ALGORITHMS
from keras_luar.algorithms.registry import DEFAULT_METHODS as DEFAULT_METHODS
from keras_luar.algorithms.registry import LUAR_COMPATIBLE as LUAR_COMPATIBLE

# Algorithm name -> the name the table prints (from the registry).
KNOWN_METHODS: dict[str, str] = {name: spec.title for name, spec in ALGORITHMS.items()}
# Options a method gets in the comparison unless a spec sets them: each method's
# `comparison_options` (the paper's FEMNIST settings, which suit the small digits CNN).
DEFAULT_OPTIONS: dict[str, dict] = {
    name: dict(spec.comparison_options)
    for name, spec in ALGORITHMS.items()
    if spec.comparison_options
}


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
