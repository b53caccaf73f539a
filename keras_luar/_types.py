"""The package's shared type names: what an option may be, written once.

No TensorFlow here: the command line reads these before TensorFlow is imported.
"""

from __future__ import annotations

from typing import Literal

ClientWeighting = Literal["uniform", "example", "round_examples"]
"""How a client's update counts in the server's mean (see `keras_luar.algorithms.weighting`)."""
WEIGHTINGS: tuple[str, ...] = ("uniform", "example", "round_examples")

BnStatistics = Literal["average", "local"]
"""What happens to BatchNorm moving statistics (see `keras_luar.algorithms.client_work`)."""
BN_STATISTICS: tuple[str, ...] = ("average", "local")

Backend = Literal["auto", "tff", "tensorflow"]
"""Where rounds run (see `keras_luar.backends`)."""
BACKENDS: tuple[str, ...] = ("auto", "tff", "tensorflow")

MixedPrecision = Literal["mixed_bfloat16", "mixed_float16"]
MIXED_PRECISION: tuple[str | None, ...] = (None, "mixed_bfloat16", "mixed_float16")
