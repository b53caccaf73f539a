"""FedPAQ: clients quantize their updates (Reisizadeh et al., 2020).

Each tensor of an update is quantized to s levels of its norm, unbiased
(`keras_luar.aggregators.QuantizationFactory`). As in the official code
(swblaster/FedLUAR at a009835), clients also quantize the change of their
BatchNorm statistics, and with LUAR on top the server quantizes the aggregate once
more before it applies, stores and scores it.

References:
  Reisizadeh, Mokhtari, Hassani, Jadbabaie, Pedarsani. "FedPAQ: A
  Communication-Efficient Federated Learning Method with Periodic Averaging and
  Quantization", AISTATS 2020.
"""

from __future__ import annotations

from typing import Any

from keras_luar._validation import check_bool, check_int, check_optional_bool
from keras_luar.algorithms.fedavg import build_fedavg_family
from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext, Option


def _build(context: BuildContext) -> Any:
    from keras_luar.aggregators import QuantizationFactory

    options = context.options
    requantize = options["requantize_aggregate"]
    if requantize is None:  # the official FedPAQ + LUAR does, FedPAQ does not
        requantize = context.num_recycled_layers > 0 or context.upload_budget is not None
    quantizer = QuantizationFactory(
        options["quantization_levels"], seed=context.seed, requantize=requantize
    )
    return build_fedavg_family(
        context,
        inner_factory=quantizer,
        statistics_quantizer=quantizer if options["quantize_statistics"] else None,
    )


OPTIONS = {
    "quantization_levels": Option(
        16, lambda n, v: check_int(n, v, 1), "s, quantization levels (paper: 16 or 8)"
    ),
    "requantize_aggregate": Option(
        None,
        check_optional_bool,
        "quantize the aggregate again at the server (None: with LUAR, as official)",
    ),
    "quantize_statistics": Option(
        True, check_bool, "quantize the change of the BatchNorm statistics (official)"
    ),
}
SPEC = builtin("fedpaq", _build, options=OPTIONS)
