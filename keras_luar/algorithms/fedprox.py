"""FedProx: a proximal term keeps local training near the global model (Li et al., 2020).

Clients minimize their loss plus μ/2·‖w − x_t‖², with the gradient's correct sign
(TFF 0.87's own FedProx flips it; see `keras_luar.algorithms.local_training`).
LUAR stacks on it (``num_recycled_layers > 0``), as in the paper's Table 3.

References:
  Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in
  Heterogeneous Networks", MLSys 2020.
"""

from __future__ import annotations

from typing import Any

from keras_luar._validation import check_float
from keras_luar.algorithms.fedavg import build_fedavg_family
from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext, Option


def _build(context: BuildContext) -> Any:
    return build_fedavg_family(context, proximal_strength=context.options["proximal_strength"])


OPTIONS = {
    "proximal_strength": Option(
        0.001, lambda n, v: check_float(n, v, 0.0), "FedProx's μ (the paper: 0.001)"
    )
}
SPEC = builtin("fedprox", _build, options=OPTIONS)
