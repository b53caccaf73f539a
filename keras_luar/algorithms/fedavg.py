"""FedAvg, and the composition FedLUAR, FedProx, FedOpt and FedPAQ are built on.

Every round the sampled clients train τ local steps from the global weights and
send their updates; the server averages them and applies the mean (McMahan et
al., 2017). keras_luar builds it from TFF's components with its own client work
(`keras_luar.algorithms.build_learning_process`) and `keras_luar.LuarFactory` as
the aggregation step: with δ = 0 the factory is exactly its inner mean, so
FedAvg is FedLUAR that recycles nothing, with the same accounting.

References:
  McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient
  Learning of Deep Networks from Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

from typing import Any

from keras_luar.algorithms.registry import builtin
from keras_luar.algorithms.spec import BuildContext


def build_fedavg_family(
    context: BuildContext,
    *,
    proximal_strength: float = 0.0,
    inner_factory: Any = None,
    statistics_quantizer: Any = None,
) -> Any:
    """The FedAvg composition with LUAR (δ of the context) as its aggregation step.

    Args:
      context: What the trainer gives every builder.
      proximal_strength: FedProx's μ (0 for the others).
      inner_factory: What aggregates the sent part (None: TFF's mean; FedPAQ's
        quantizer).
      statistics_quantizer: FedPAQ's quantizer for the BatchNorm statistics.

    Returns:
      A `tff.learning.templates.LearningProcess` wrapped with
      `keras_luar.with_global_weight_norms`.
    """
    import tensorflow_federated as tff

    from keras_luar.aggregators import LuarFactory, with_global_weight_norms
    from keras_luar.algorithms.client_work import build_learning_process

    if inner_factory is None:
        inner_factory = context.inner_aggregator
    weighted = inner_factory is None or isinstance(
        inner_factory, tff.aggregators.WeightedAggregationFactory
    )
    budget = context.upload_budget
    factory = LuarFactory(
        None if budget is not None else context.num_recycled_layers,
        upload_budget=budget,
        seed=context.seed,
        inner_factory=inner_factory,
        # The weights the client work computes; an unweighted inner takes none (the
        # config made sure the trainer's weighting is uniform then).
        client_weighting="example" if weighted else "uniform",
        variable_names=[v.name for v in context.layout.trainable],
    )
    process = build_learning_process(
        context.model_fn,
        client_optimizer=context.client_optimizer,
        server_optimizer=context.server_optimizer or tff.learning.optimizers.build_sgdm(1.0),
        model_aggregator=factory,
        proximal_strength=proximal_strength,
        client_weighting=context.client_weighting,
        bn_statistics=context.bn_statistics,
        statistics_quantizer=statistics_quantizer,
    )
    return with_global_weight_norms(process)


SPEC = builtin("fedavg", build_fedavg_family)
