"""TFF aggregation factories of keras_luar."""

from keras_luar.aggregators.luar import LuarFactory, LuarState
from keras_luar.aggregators.weight_norms import with_global_weight_norms

__all__ = ["LuarFactory", "LuarState", "with_global_weight_norms"]
