"""FedOpt: a server optimizer on the aggregated update (Reddi et al., 2021).

The clients' mean update is handed to a server optimizer (SGD with a learning
rate, Adam, ...) instead of being added as is. With LUAR, the recycled update is
re-inserted before the server optimizer, as in the official FedOpt + LUAR code.

References:
  Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. "Adaptive
  Federated Optimization", ICLR 2021.
"""

from __future__ import annotations

from keras_luar.algorithms.fedavg import build_fedavg_family
from keras_luar.algorithms.registry import register
from keras_luar.algorithms.spec import AlgorithmSpec

SPEC = register(
    AlgorithmSpec(
        name="fedopt",
        title="FedOpt",
        reference="Reddi et al., ICLR 2021",
        build=build_fedavg_family,
        summary="FedAvg whose aggregated update goes through a server optimizer",
        luar="optional",
        inner_aggregator=True,
        server_optimizer="required",
        # The paper's FEMNIST setting: server SGD with learning rate 1.2.
        comparison_options={"server_learning_rate": 1.2},
    )
)
