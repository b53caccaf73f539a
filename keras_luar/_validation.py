"""Argument checks shared by the whole package.

Every check raises before anything is built or traced, with the message shape
Keras uses: ``Invalid value for argument `name`. Expected ... Received: name=...``.
TypeError for a value of the wrong kind, ValueError for one out of range.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_luar._types import BN_STATISTICS, WEIGHTINGS


def invalid(name: str, expected: str, value: Any, error: type = ValueError) -> Exception:
    """The package's error for argument `name`: what was expected and what was received."""
    return error(
        f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={value!r}"
    )


def check_int(name: str, value: Any, minimum: int) -> int:
    """Returns `value` as an int, or raises naming the argument, the value and the bound."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected an int >= {minimum}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise invalid(name, f"an int >= {minimum}", value)
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """Returns a seed that fits in int64."""
    seed = check_int(name, value, -(2**63))
    if seed >= 2**63:
        raise invalid(name, "an int that fits in int64", value)
    return seed


def check_float(
    name: str, value: Any, low: float, high: float = math.inf, *, open_high: bool = False
) -> float:
    """Returns `value` as a float in [low, high] (or [low, high) with `open_high`)."""
    bounds = f"[{low}, {high})" if open_high else f"[{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a float in {bounds}. "
            f"Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    above = value >= high if open_high else value > high
    if math.isnan(value) or value < low or above:
        raise invalid(name, f"a float in {bounds}", value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """Returns `value` if it is a bool (numpy's included)."""
    if not isinstance(value, bool | np.bool_):
        raise invalid(name, "True or False", value, TypeError)
    return bool(value)


def check_optional_bool(name: str, value: Any) -> bool | None:
    """None, or a bool."""
    return None if value is None else check_bool(name, value)


def argument_checker(kinds: Mapping[str, Callable[[str, Any], Any]]) -> Callable[..., Callable]:
    """A decorator factory checking arguments by kind, with the checks of `kinds`.

    ``checker(size="a b", flag="c")`` decorates a function so that, before each
    call, arguments ``a`` and ``b`` become ``kinds["size"]("a", a)`` and so on,
    kind by kind in the order given, then name by name: the checked (and
    converted) values are what the function receives, and a bad one raises
    before its body runs.
    """

    def checker(**groups: str) -> Callable[[Callable], Callable]:
        unknown = set(groups) - set(kinds)
        if unknown:
            raise TypeError(f"argument kinds {sorted(unknown)} unknown; expected {sorted(kinds)}")
        plan = [(name, kinds[kind]) for kind, names in groups.items() for name in names.split()]

        def decorate(function: Callable) -> Callable:
            signature = inspect.signature(function)
            missing = [name for name, _ in plan if name not in signature.parameters]
            if missing:
                raise TypeError(f"{function.__qualname__} has no argument(s) {missing}")

            @functools.wraps(function)
            def checked(*args, **kwargs):
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                for name, check in plan:
                    bound.arguments[name] = check(name, bound.arguments[name])
                return function(*bound.args, **bound.kwargs)

            return checked

        return decorate

    return checker


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Returns `value` if it is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise invalid(name, f"one of {tuple(choices)}", value)
    return value


def check_weighting(name: str, value: Any) -> str:
    """A client weighting (see `keras_luar.algorithms.weighting`)."""
    if value not in WEIGHTINGS:
        raise invalid(
            name,
            f"one of {WEIGHTINGS}: 'uniform' (every client counts 1), 'example' (a client "
            "counts the size of its data set) or 'round_examples' (the examples it trained "
            "on this round)",
            value,
        )
    return value


def check_bn_statistics(
    value: Any, supported: Sequence[str] = BN_STATISTICS, owner: str = ""
) -> str:
    """A BatchNorm statistics rule among `supported` (`owner` names who supports them)."""
    if value not in supported:
        by = f" for {owner}" if owner else ""
        raise invalid("bn_statistics", f"one of {tuple(supported)}{by}", value)
    return value


def check_weighted_factory(name: str, value: Any) -> Any:
    """Returns `value`, or TFF's MeanFactory for None; raises if it is not a weighted factory."""
    import tensorflow_federated as tff

    if value is None:
        return tff.aggregators.MeanFactory()
    if not isinstance(value, tff.aggregators.WeightedAggregationFactory):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a "
            "tff.aggregators.WeightedAggregationFactory. Received: "
            f"{name}={type(value).__name__}"
        )
    return value


def check_inner_factory(name: str, value: Any) -> tuple[Any, bool]:
    """Returns ``(factory, weighted)`` for a TFF aggregation factory (TFF's mean for None).

    Raises:
      TypeError: If `value` is neither a weighted nor an unweighted TFF factory.
    """
    import tensorflow_federated as tff

    if value is None:
        return tff.aggregators.MeanFactory(), True
    if isinstance(value, tff.aggregators.WeightedAggregationFactory):
        return value, True
    if isinstance(value, tff.aggregators.UnweightedAggregationFactory):
        return value, False
    raise TypeError(
        f"Invalid value for argument `{name}`. Expected a "
        "tff.aggregators.WeightedAggregationFactory or UnweightedAggregationFactory "
        "(e.g. tff.aggregators.MeanFactory(), "
        "tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(...), "
        "tff.learning.robust_aggregator()). Received: "
        f"{name}={type(value).__name__}"
    )


def holds_secure_sum(factory: Any) -> bool:
    """Whether `factory`, or a factory it wraps, is a `tff.aggregators.SecureSumFactory`."""
    import tensorflow_federated as tff

    return _holds_secure_sum(factory, tff.aggregators.SecureSumFactory)


def _holds_secure_sum(factory: Any, secure_type: type, depth: int = 0) -> bool:
    """Whether `factory`, or a factory it wraps (TFF keeps them as attributes), sums securely."""
    if isinstance(factory, secure_type):
        return True
    if depth > 8:
        return False
    held = list(getattr(factory, "__dict__", {}).values())
    # TFF's robust wrappers (clipping, zeroing, secure_aggregator) keep the factories
    # they wrap in the closure of their class's `create`.
    create = getattr(type(factory), "create", None)
    for cell in getattr(create, "__closure__", None) or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    return any(
        _holds_secure_sum(v, secure_type, depth + 1)
        for v in held
        if v is not factory and hasattr(v, "create")
    )


def check_aggregation_types(owner: str, value_type: Any, weight_type: Any) -> tuple[Any, Any]:
    """Converts and checks a weighted factory's `create` types; raises TypeError naming `owner`."""
    import tensorflow as tf
    import tensorflow_federated as tff

    value_type = tff.types.to_type(value_type)
    weight_type = tff.types.to_type(weight_type)
    if not tff.types.is_structure_of_floats(value_type):
        raise TypeError(
            f"{owner}.create: expected `value_type` to be a structure of float "
            f"tensors. Received: value_type={value_type}"
        )
    if not (isinstance(weight_type, tff.TensorType) and tf.as_dtype(weight_type.dtype).is_floating):
        raise TypeError(
            f"{owner}.create: expected `weight_type` to be a float tensor type. "
            f"Received: weight_type={weight_type}"
        )
    return value_type, weight_type


def check_built_model(model: Any) -> Any:
    """Returns `model` if it is a built `tf.keras.Model`; raises naming the argument otherwise."""
    import tensorflow as tf

    if not isinstance(model, tf.keras.Model):
        raise invalid("model", "a tf.keras.Model", type(model).__name__, TypeError)
    if not model.built:
        raise invalid(
            "model",
            "a built model (give it an Input layer or call it once on data)",
            f"an unbuilt {type(model).__name__}",
        )
    return model


check_arguments = argument_checker(
    {
        "size": lambda name, value: check_int(name, value, 1),
        "count": lambda name, value: check_int(name, value, 0),
        "flag": check_bool,
    }
)
"""``@check_arguments(size="a b", count="c", flag="d")``: ints >= 1, ints >= 0, bools."""
