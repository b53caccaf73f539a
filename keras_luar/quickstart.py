"""The quickstart experiment: FedAvg against FedLUAR on the embedded digits data.

Both methods run through TFF's own `build_weighted_fed_avg` with a
`LuarFactory` as the model aggregator (δ = 0 is FedAvg exactly), on the same
clients, the same client sample in every round and the same initial weights,
so the only difference is recycling.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from keras_luar import layers
from keras_luar.aggregators import LuarFactory, with_global_weight_norms
from keras_luar.data import load_digits_federated


def digits_cnn(num_classes: int = 10) -> tf.keras.Model:
    """A small CNN for 8x8 digits with 4 candidate kernels (returns logits)."""
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            tf.keras.layers.MaxPooling2D(2, name="pool"),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(64, activation="relu", name="dense1"),
            tf.keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_cnn",
    )


@dataclasses.dataclass
class RunResult:
    """What one method produced, round by round."""

    name: str
    accuracy: list[float] = dataclasses.field(default_factory=list)
    upload_params: list[int] = dataclasses.field(default_factory=list)
    recycled: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def comm_cost(self, fedavg_params_per_round: int) -> float:
        """Cumulative upload relative to FedAvg over the same rounds."""
        return sum(self.upload_params) / (fedavg_params_per_round * len(self.upload_params))


def _client_round_data(arrays, round_num, seed, local_steps, batch_size):
    x, y = arrays
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed * 100_003 + round_num, reshuffle_each_iteration=True)
    return ds.repeat().batch(batch_size).take(local_steps)


def run_quickstart(
    *,
    rounds: int = 30,
    num_clients: int = 32,
    clients_per_round: int = 8,
    num_recycled_layers: int = 2,
    alpha: float = 0.5,
    local_steps: int = 20,
    batch_size: int = 20,
    learning_rate: float = 0.05,
    seed: int = 0,
    on_round: Callable[[int, RunResult, RunResult], None] | None = None,
) -> tuple[RunResult, RunResult, layers.ModelLayout]:
    """Trains FedAvg and FedLUAR side by side; returns their results and the layout.

    Args:
      rounds: Federated rounds per method.
      num_clients: Clients the digits training split is divided into (Dirichlet).
      clients_per_round: Clients sampled per round (seeded by (seed, round)).
      num_recycled_layers: FedLUAR's δ.
      alpha: Dirichlet concentration of the client split.
      local_steps: τ, local SGD steps per client per round.
      batch_size: Local batch size.
      learning_rate: Local SGD learning rate (momentum 0.9, as in the paper).
      seed: Seeds the split, the client sampling, the initial weights and LUAR.
      on_round: Called after every round with (round, fedavg, fedluar).

    Returns:
      ``(fedavg, fedluar, layout)``.
    """
    data = load_digits_federated(num_clients, alpha, seed=seed)
    client_ids = sorted(data.client_arrays)
    x_test, y_test = data.test_data
    tf.keras.utils.set_random_seed(seed)
    template = digits_cnn(data.num_classes)
    layout = layers.describe_model(template)
    initial = tff.learning.models.ModelWeights.from_model(template)
    initial = tf.nest.map_structure(lambda v: v.numpy(), initial)
    input_spec = (
        tf.TensorSpec([None, *data.input_shape], tf.float32),
        tf.TensorSpec([None], tf.int32),
    )

    def model_fn():
        return tff.learning.models.from_keras_model(
            digits_cnn(data.num_classes),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec,
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    names = [v.name for v in layout.trainable]

    def build(delta):
        process = tff.learning.algorithms.build_weighted_fed_avg(
            model_fn,
            client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate, momentum=0.9),
            model_aggregator=LuarFactory(delta, seed=seed, variable_names=names),
        )
        process = with_global_weight_norms(process)
        return process, process.set_model_weights(process.initialize(), initial)

    runs = {"FedAvg": build(0), "FedLUAR": build(num_recycled_layers)}
    results = {name: RunResult(name) for name in runs}
    evaluator = digits_cnn(data.num_classes)
    evaluator.compile(metrics=["accuracy"])
    for round_num in range(rounds):
        rng = np.random.default_rng([seed, round_num])
        sampled = rng.choice(len(client_ids), size=clients_per_round, replace=False)
        datasets = [
            _client_round_data(
                data.client_arrays[client_ids[i]], round_num, seed, local_steps, batch_size
            )
            for i in sorted(sampled)
        ]
        for name, (process, state) in runs.items():
            result = results[name]
            start = time.perf_counter()
            output = process.next(state, datasets)
            result.seconds += time.perf_counter() - start
            runs[name] = (process, output.state)
            luar = output.metrics["aggregator"]["luar"]
            mask = np.asarray(luar["recycled"])
            result.upload_params.append(int(luar["upload_params"]))
            result.recycled.append(
                tuple(n for n, m in zip(layout.candidate_names, mask, strict=True) if m)
            )
            process.get_model_weights(output.state).assign_weights_to(evaluator)
            logits = evaluator.predict(x_test, batch_size=256, verbose=0)
            result.accuracy.append(float(np.mean(np.argmax(logits, axis=1) == y_test)))
        if on_round is not None:
            on_round(round_num, results["FedAvg"], results["FedLUAR"])
    return results["FedAvg"], results["FedLUAR"], layout
