"""Comparing federated methods on the embedded digits experiment (`keras-luar compare`).

The public face of `keras_luar.experiments`: `compare_methods` trains every
method on every seed with the same split, initial weights and client samples and
returns a `ComparisonResult` (the paper's Table 1 in Markdown and CSV, the
histories as JSON, the accuracy-vs-communication plot); methods are named by
specs such as ``"fedprox+luar:proximal_strength=0.01"`` (`parse_method_spec`).
"""

from keras_luar.experiments.compare import compare_methods
from keras_luar.experiments.methods import (
    DEFAULT_METHODS,
    DEFAULT_OPTIONS,
    KNOWN_METHODS,
    LUAR_COMPATIBLE,
    MethodSpec,
    parse_method_spec,
)
from keras_luar.experiments.results import ComparisonResult, MethodSummary

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_OPTIONS",
    "KNOWN_METHODS",
    "LUAR_COMPATIBLE",
    "ComparisonResult",
    "MethodSpec",
    "MethodSummary",
    "compare_methods",
    "parse_method_spec",
]
