"""keras_luar: communication-efficient federated learning for Keras models.

FedLUAR (layer-wise update aggregation with recycling) and related methods on
TensorFlow Federated.

Importing the package is cheap and changes nothing in the process: TensorFlow
and TFF load when a name that needs them is first used (``keras_luar.FederatedTrainer``,
``keras_luar.LuarFactory``, ``keras_luar.data``, ...), and the guards that stop TFF's
``worker_binary`` processes with this one are set up when keras_luar's TFF parts are
first used (see `keras_luar._runtime`). The one thing done at import: when
TensorFlow is not loaded yet, ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2, so that
TensorFlow's C++ info lines stay quiet when it loads (a value you set is kept).
"""

import importlib as _importlib
import os as _os
import sys as _sys
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# TensorFlow reads its C++ log level once, when its library loads: only a value set
# before that counts. Warnings and errors still show; a value the user set is kept.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Public name -> (module, attribute); None as attribute: the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "FederatedTrainer": ("keras_luar.trainer", "FederatedTrainer"),
    "LuarFactory": ("keras_luar.aggregators", "LuarFactory"),
    "LuarState": ("keras_luar.aggregators", "LuarState"),
    "with_global_weight_norms": ("keras_luar.aggregators", "with_global_weight_norms"),
    "describe_model": ("keras_luar.layers", "describe_model"),
    "describe_weights_type": ("keras_luar.layers", "describe_weights_type"),
    "data": ("keras_luar.data", None),
    "layers": ("keras_luar.layers", None),
    "scoring": ("keras_luar.scoring", None),
}
# Subpackages reachable as attributes (``keras_luar.algorithms.build_fedlama``) without
# importing them first, as when the package imported everything eagerly.
_SUBMODULES = (
    "aggregators",
    "algorithms",
    "backends",
    "compare",
    "history_io",
    "models",
    "optimizers",
    "plotting",
    "presets",
    "quickstart",
    "trainer",
)
# Parts that build or run TFF computations: using them sets up the worker guards.
_USES_TFF = frozenset(
    {"FederatedTrainer", "LuarFactory", "LuarState", "with_global_weight_norms"}
    | {"aggregators", "algorithms", "backends", "trainer"}
)

if _TYPE_CHECKING:  # for type checkers and the API reference; at run time, `__getattr__`
    from keras_luar import data, layers, scoring
    from keras_luar.aggregators import LuarFactory, LuarState, with_global_weight_norms
    from keras_luar.layers import describe_model, describe_weights_type
    from keras_luar.trainer import FederatedTrainer

__all__ = [
    "FederatedTrainer",
    "LuarFactory",
    "LuarState",
    "data",
    "describe_model",
    "describe_weights_type",
    "layers",
    "scoring",
    "with_global_weight_norms",
    "__version__",
]


def __getattr__(name: str):
    """Loads a public name on first use (PEP 562)."""
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
    elif name in _SUBMODULES:
        module_name, attribute = f"keras_luar.{name}", None
    else:
        raise AttributeError(f"module 'keras_luar' has no attribute {name!r}")
    if "tensorflow" not in _sys.modules:
        from keras_luar import _runtime

        _runtime.import_tensorflow_quietly()
    module = _importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    if name in _USES_TFF:
        from keras_luar import _runtime

        _runtime.install()
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
