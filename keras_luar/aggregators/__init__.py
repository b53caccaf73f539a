"""TFF aggregation factories of keras_luar."""

from keras_luar.aggregators.luar import LuarFactory, LuarState
from keras_luar.aggregators.quantization import QuantizationFactory, QuantizationState
from keras_luar.aggregators.weight_norms import with_global_weight_norms

__all__ = [
    "LuarFactory",
    "LuarState",
    "QuantizationFactory",
    "QuantizationState",
    "with_global_weight_norms",
]
