"""The embedded experiment behind `keras-luar quickstart` and `keras-luar run`.

The public face of `keras_luar.experiments.digits`: a small CNN (or its
BatchNorm twin) on scikit-learn's digits, split over clients by the paper's
Dirichlet partition, and FedAvg against FedLUAR from the same initial weights
with the same clients in every round (`compare_on_digits`).
"""

from keras_luar.experiments.compare import compare_on_digits, summarize
from keras_luar.experiments.digits import (
    DIGITS_MODELS,
    DigitsSetup,
    digits_bn_cnn,
    digits_cnn,
    digits_data,
    fit_digits,
    make_digits_trainer,
)

__all__ = [
    "DIGITS_MODELS",
    "DigitsSetup",
    "compare_on_digits",
    "digits_bn_cnn",
    "digits_cnn",
    "digits_data",
    "fit_digits",
    "make_digits_trainer",
    "summarize",
]
