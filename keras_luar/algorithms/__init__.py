"""Federated learning algorithms built from TFF components: client work and process builders.

* `build_learning_process`: TFF's FedAvg composition with keras_luar's client
  work (FedAvg, FedProx, FedOpt, FedPAQ and LUAR on top of them, FedPart).
* `build_lbgm`, `build_fedlama`: processes with per-client state
  (`StatefulClientProcess`).
* `build_fedpart`, `layer_groups`, `FedPartSchedule`: FedPart's partial updates.
"""

from keras_luar.algorithms.client_work import build_client_work, build_learning_process
from keras_luar.algorithms.fedlama import build_fedlama
from keras_luar.algorithms.fedpart import (
    FedPartSchedule,
    LayerGroup,
    PartialUpdateFactory,
    build_fedpart,
    layer_groups,
)
from keras_luar.algorithms.lbgm import build_lbgm
from keras_luar.algorithms.local_training import build_local_training
from keras_luar.algorithms.registry import ALGORITHMS
from keras_luar.algorithms.stateful import StatefulClientProcess, StatefulOutput

__all__ = [
    "ALGORITHMS",
    "FedPartSchedule",
    "LayerGroup",
    "PartialUpdateFactory",
    "StatefulClientProcess",
    "StatefulOutput",
    "build_client_work",
    "build_fedlama",
    "build_fedpart",
    "build_lbgm",
    "build_learning_process",
    "build_local_training",
    "layer_groups",
]
