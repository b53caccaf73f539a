"""TFF aggregation factories of keras_luar.

* `LuarFactory` (FedLUAR) and `PartialUpdateFactory` (FedPart), both on the
  masked-upload skeleton of `keras_luar.aggregators.masked`;
* `QuantizationFactory` (FedPAQ), which composes under either;
* `with_global_weight_norms`, which gives a `LuarFactory` inside a TFF learning
  process the norms of the global weights.
"""

from keras_luar.aggregators.luar import LuarFactory, LuarState
from keras_luar.aggregators.partial import PartialUpdateFactory, PartialUpdateState
from keras_luar.aggregators.quantization import QuantizationFactory, QuantizationState
from keras_luar.aggregators.weight_norms import with_global_weight_norms

__all__ = [
    "LuarFactory",
    "LuarState",
    "PartialUpdateFactory",
    "PartialUpdateState",
    "QuantizationFactory",
    "QuantizationState",
    "with_global_weight_norms",
]
