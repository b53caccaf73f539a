"""FedLUAR: layer-wise update aggregation with recycling (Kim, Kang & Lee, 2025).

FedAvg in which, every round, δ layers with a small update relative to their
weights are not uploaded and the server re-applies their last aggregated update.
The aggregation step is `keras_luar.LuarFactory`; see `keras_luar.aggregators.luar`
for the exact semantics and where they depart from the official code.

References:
  Kim, Kang, Lee. "Layer-wise Update Aggregation with Recycling for
  Communication-Efficient Federated Learning", 2025.
"""

from __future__ import annotations

from keras_luar.algorithms.fedavg import build_fedavg_family
from keras_luar.algorithms.registry import builtin

SPEC = builtin("fedluar", build_fedavg_family)
