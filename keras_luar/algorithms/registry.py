"""The methods `FederatedTrainer` can run, by name, in the order the docs list them.

The built-in methods are described in ``methods.toml`` (title, paper, whether
LUAR stacks on them, their weighting and BatchNorm rules, their comparison
settings), which is read without importing TensorFlow, so that the command line
can list and check them before TensorFlow loads. Each method's module adds its
code with `builtin` when it is imported, on first lookup. A user or a test
registers a method of its own with a whole `AlgorithmSpec`:

    register(AlgorithmSpec("mymethod", "MyMethod", "me, 2026", build=my_build))

and it then runs through `FederatedTrainer(algorithm="mymethod")`, `keras-luar
compare` and `keras-luar run`.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any

from keras_luar.algorithms.spec import AlgorithmSpec, BuildContext

# name -> its fields in methods.toml, in table order. The only list of built-ins.
BUILTIN_FIELDS: dict[str, dict[str, Any]] = tomllib.loads(
    resources.files(__package__).joinpath("methods.toml").read_text(encoding="utf-8")
)
# name -> the module that registers it.
BUILTIN: dict[str, str] = {name: fields["module"] for name, fields in BUILTIN_FIELDS.items()}
# The built-in methods LUAR stacks on (`+luar`), as in the paper's Tables 3-4.
LUAR_COMPATIBLE: tuple[str, ...] = tuple(
    n for n, f in BUILTIN_FIELDS.items() if f.get("luar") == "optional"
)
# The comparison's default table: the built-in methods without +luar, then each one LUAR
# stacks on, alone and with LUAR.
_COMPARED = [n for n, f in BUILTIN_FIELDS.items() if f.get("in_comparison", True)]
DEFAULT_METHODS: tuple[str, ...] = (
    *(n for n in _COMPARED if n not in LUAR_COMPATIBLE),
    *(m for n in _COMPARED if n in LUAR_COMPATIBLE for m in (n, f"{n}+luar")),
)

_SPECS: dict[str, AlgorithmSpec] = {}


def register(spec: AlgorithmSpec, *, replace: bool = False) -> AlgorithmSpec:
    """Adds `spec` to the registry; returns it.

    Raises:
      TypeError: If `spec` is not an `AlgorithmSpec`.
      ValueError: If its name is taken (unless `replace`).
    """
    if not isinstance(spec, AlgorithmSpec):
        raise TypeError(f"register: expected an AlgorithmSpec. Received: {type(spec).__name__}")
    if spec.name in _SPECS and not replace and _SPECS[spec.name] is not spec:
        raise ValueError(f"register: an algorithm named {spec.name!r} is registered already.")
    _SPECS[spec.name] = spec
    return spec


def builtin(name: str, build: Callable[[BuildContext], Any], **code: Any) -> AlgorithmSpec:
    """Registers the built-in method `name`: its fields in methods.toml, with its code.

    Args:
      name: A method of methods.toml.
      build: Its build function (`AlgorithmSpec.build`).
      **code: The fields that are code rather than data: ``options``, ``check``,
        a ``client_weighting`` function.
    """
    fields = {k: v for k, v in BUILTIN_FIELDS[name].items() if k != "module"}
    if "bn_statistics" in fields:
        fields["bn_statistics"] = tuple(fields["bn_statistics"])
    return register(AlgorithmSpec(name=name, build=build, **fields, **code))


def unregister(name: str) -> None:
    """Removes a method registered by `register` (not a built-in)."""
    if name in BUILTIN:
        raise ValueError(f"unregister: {name!r} is a built-in method.")
    _SPECS.pop(name, None)


def _load_builtins() -> None:
    for name, module in BUILTIN.items():
        if name not in _SPECS:
            importlib.import_module(module)


def names() -> tuple[str, ...]:
    """Every registered name, built-ins first (no method module is imported)."""
    return tuple(BUILTIN) + tuple(n for n in _SPECS if n not in BUILTIN)


def get(name: str) -> AlgorithmSpec:
    """The spec of `name`.

    Raises:
      ValueError: For an unknown name; the message lists the known ones.
    """
    if name in BUILTIN and name not in _SPECS:
        importlib.import_module(BUILTIN[name])
    if not isinstance(name, str) or name not in _SPECS:
        raise ValueError(
            f"Invalid value for argument `algorithm`. Expected one of {names()}. "
            f"Received: algorithm={name!r}"
        )
    return _SPECS[name]


class _Specs(Mapping):
    """All specs by name, in table order (imports the built-in methods on first use)."""

    def __getitem__(self, name: str) -> AlgorithmSpec:
        if name not in names():
            raise KeyError(name)
        return get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(names())

    def __repr__(self) -> str:
        return f"ALGORITHMS({', '.join(names())})"


ALGORITHMS: Mapping[str, AlgorithmSpec] = _Specs()
"""Name -> `AlgorithmSpec` for every registered method."""


def resolve(algorithm: str, options: Mapping) -> tuple[AlgorithmSpec, dict]:
    """Checks an algorithm name and its options; returns the spec and all options."""
    spec = get(algorithm)
    return spec, spec.resolve_options(options)
