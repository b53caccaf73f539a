"""Does each method hand back a model whose BatchNorm statistics fit its weights?

The experiment of issue #14: scikit-learn's digits over 16 IID clients, a CNN of two
``Conv2D(use_bias=False) + BatchNormalization + ReLU`` blocks and a Dense head,
8 clients per round, τ = 10, SGD(0.05, momentum 0.9), batch 16, 15 rounds. For
every method and seed it prints the final validation accuracy the History reports
and the accuracy of the same weights with the statistics recomputed on the training
data (one pass with momentum 0), then the mean ± std over seeds. A method that
left the global model at its initial statistics (mean 0, variance 1) reports far
less than its weights give.

It uses only the public API, so it runs on any version of keras_luar:

    uv run python benchmarks/bn_statistics.py [--seeds 0 1 2] [--rounds 15]
"""

from __future__ import annotations

import argparse

import numpy as np
import tensorflow as tf

import keras_luar
from keras_luar.data import load_digits_federated

METHODS = {
    "FedAvg": dict(algorithm="fedavg"),
    "FedLUAR δ=1": dict(algorithm="fedluar", num_recycled_layers=1),
    "FedLAMA": dict(algorithm="fedlama"),
    "LBGM": dict(algorithm="lbgm"),
    "FedPart": dict(algorithm="fedpart"),
}


def bn_cnn() -> tf.keras.Model:
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 1)),
            layers.Conv2D(16, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )


def recomputed_accuracy(model: tf.keras.Model, x_train, x_test, y_test) -> float:
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    copy(x_train, training=True)  # the statistics of the whole training set
    logits = copy(x_test, training=False).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == y_test))


def run(name: str, seed: int, rounds: int) -> tuple[float, float]:
    data = load_digits_federated(num_clients=16, iid=True, seed=seed)
    tf.keras.utils.set_random_seed(seed)
    trainer = keras_luar.FederatedTrainer(
        bn_cnn(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        local_steps=10,
        batch_size=16,
        client_optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9),
        seed=seed,
        **METHODS[name],
    )
    history = trainer.fit(
        data, rounds=rounds, clients_per_round=8, validation_data=data.test_data, verbose=0
    )
    x_train = np.concatenate([x for x, _ in data.client_arrays.values()])
    reported = float(history.history["val_accuracy"][-1])
    return reported, recomputed_accuracy(trainer.model, x_train, *data.test_data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    results = {name: [] for name in METHODS}
    for seed in args.seeds:
        for name in METHODS:
            reported, recomputed = run(name, seed, args.rounds)
            results[name].append((reported, recomputed))
            print(
                f"seed {seed}  {name:<12} reported {reported:.3f}  recomputed {recomputed:.3f}",
                flush=True,
            )
    print(f"\nkeras_luar {keras_luar.__version__}, seeds {args.seeds}, {args.rounds} rounds\n")
    print("| method | reported | same weights, BN statistics recomputed |")
    print("| --- | --: | --: |")
    for name, rows in results.items():
        values = np.array(rows)
        mean, std = values.mean(axis=0), values.std(axis=0)
        print(f"| {name} | {mean[0]:.3f} ± {std[0]:.3f} | {mean[1]:.3f} ± {std[1]:.3f} |")


if __name__ == "__main__":
    main()
