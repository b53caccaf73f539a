"""keras_luar: communication-efficient federated learning for Keras models.

FedLUAR (layer-wise update aggregation with recycling) and related methods on
TensorFlow Federated.
"""

import os as _os

# TensorFlow's C++ log lines about missing CUDA/TensorRT drown the output of a
# CPU run; keep warnings and errors unless the user asked for something else.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_luar import _runtime  # noqa: E402

_runtime.install()

from keras_luar import data, layers, scoring  # noqa: E402
from keras_luar.aggregators import LuarFactory, LuarState, with_global_weight_norms  # noqa: E402
from keras_luar.layers import describe_model, describe_weights_type  # noqa: E402
from keras_luar.trainer import FederatedTrainer  # noqa: E402

__version__ = "0.1.0"

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
