"""Federated learning methods built from TFF components, and the registry that lists them.

* `ALGORITHMS` (`keras_luar.algorithms.registry`): every method by name, each
  declared by its own module as an `AlgorithmSpec`.
* `build_learning_process`: TFF's FedAvg composition with keras_luar's client
  work (FedAvg, FedProx, FedOpt, FedPAQ and LUAR on top of them, FedPart).
* `build_lbgm`, `build_fedlama`: processes with per-client state
  (`StatefulClientProcess`).
* `build_fedpart`, `layer_groups`, `FedPartSchedule`: FedPart's partial updates.

The names load on first use, so that reading the registry (as the command line
does) does not import TensorFlow.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

_LAZY = {
    "ALGORITHMS": "keras_luar.algorithms.registry",
    "AlgorithmSpec": "keras_luar.algorithms.spec",
    "BuildContext": "keras_luar.algorithms.spec",
    "Option": "keras_luar.algorithms.spec",
    "register": "keras_luar.algorithms.registry",
    "FedPartSchedule": "keras_luar.algorithms.fedpart",
    "LayerGroup": "keras_luar.layer_groups",
    "layer_groups": "keras_luar.layer_groups",
    "PartialUpdateFactory": "keras_luar.aggregators.partial",
    "StatefulClientProcess": "keras_luar.algorithms.stateful",
    "StatefulOutput": "keras_luar.algorithms.stateful",
    "SizedClientData": "keras_luar.algorithms.weighting",
    "sized_client_data": "keras_luar.algorithms.weighting",
    "build_client_work": "keras_luar.algorithms.client_work",
    "build_learning_process": "keras_luar.algorithms.client_work",
    "build_fedlama": "keras_luar.algorithms.fedlama",
    "build_fedpart": "keras_luar.algorithms.fedpart",
    "build_lbgm": "keras_luar.algorithms.lbgm",
    "build_local_training": "keras_luar.algorithms.local_training",
}

__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "BuildContext",
    "FedPartSchedule",
    "LayerGroup",
    "Option",
    "PartialUpdateFactory",
    "SizedClientData",
    "StatefulClientProcess",
    "StatefulOutput",
    "build_client_work",
    "build_fedlama",
    "build_fedpart",
    "build_lbgm",
    "build_learning_process",
    "build_local_training",
    "layer_groups",
    "register",
    "sized_client_data",
]

if _TYPE_CHECKING:  # for type checkers and the API reference; at run time, `__getattr__`
    from keras_luar.aggregators.partial import PartialUpdateFactory
    from keras_luar.algorithms.client_work import build_client_work, build_learning_process
    from keras_luar.algorithms.fedlama import build_fedlama
    from keras_luar.algorithms.fedpart import FedPartSchedule, build_fedpart
    from keras_luar.algorithms.lbgm import build_lbgm
    from keras_luar.algorithms.local_training import build_local_training
    from keras_luar.algorithms.registry import ALGORITHMS, register
    from keras_luar.algorithms.spec import AlgorithmSpec, BuildContext, Option
    from keras_luar.algorithms.stateful import StatefulClientProcess, StatefulOutput
    from keras_luar.algorithms.weighting import SizedClientData, sized_client_data
    from keras_luar.layer_groups import LayerGroup, layer_groups


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_luar.algorithms' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
