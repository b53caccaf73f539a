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
from keras_luar.algorithms.registry import builtin

SPEC = builtin("fedopt", build_fedavg_family)
