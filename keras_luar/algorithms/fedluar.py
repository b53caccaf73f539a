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
from keras_luar.algorithms.registry import register
from keras_luar.algorithms.spec import AlgorithmSpec

SPEC = register(
    AlgorithmSpec(
        name="fedluar",
        title="FedLUAR",
        reference="Kim, Kang, Lee, 2025",
        build=build_fedavg_family,
        summary="FedAvg that recycles δ low-scoring layers' last update instead of uploading them",
        luar="always",
        inner_aggregator=True,
    )
)
