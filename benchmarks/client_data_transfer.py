"""Round time when client data travels with every TFF call vs when it is read from files.

TFF serializes each `tf.data.Dataset` argument, data included, on every call.
`FederatedTrainer` writes client data to TFRecord files once per `fit` and
passes datasets that read them, so a call carries only a small graph. This
measures both on the same TFF process with CIFAR-shaped clients
(32x32x3 float32 images), alternating the two in every round.

    uv run python benchmarks/client_data_transfer.py [--clients 8] [--examples 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import keras_luar  # noqa: F401  (worker-process hygiene)
from keras_luar.data.records import read_client_records, write_client_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    clients = {
        str(i): tf.data.Dataset.from_tensor_slices(
            (
                rng.random((args.examples, 32, 32, 3), dtype=np.float32),
                rng.integers(0, 10, args.examples).astype(np.int32),
            )
        )
        for i in range(args.clients)
    }
    directory = tempfile.mkdtemp()
    paths, _ = write_client_records(clients, directory, stacked=True)
    spec = clients["0"].element_spec
    on_disk = {c: read_client_records(paths[c], spec, stacked=True) for c in clients}

    def prepare(ds):
        return ds.shuffle(args.examples, seed=1).repeat().batch(20).take(5)

    input_spec = prepare(clients["0"]).element_spec

    def model_fn():
        model = tf.keras.Sequential(
            [
                tf.keras.Input((32, 32, 3)),
                tf.keras.layers.Conv2D(8, 3, strides=4),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(10),
            ]
        )
        return tff.learning.models.from_keras_model(
            model,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=input_spec,
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01)
    )
    state = process.initialize()
    seconds: dict[str, list[float]] = {"in-memory datasets": [], "file-reading datasets": []}
    for _ in range(args.rounds):
        for name, source in zip(seconds, (clients, on_disk), strict=True):
            data = [prepare(source[c]) for c in clients]
            start = time.perf_counter()
            state = process.next(state, data).state
            seconds[name].append(time.perf_counter() - start)
    megabytes = args.clients * args.examples * (32 * 32 * 3 * 4 + 4) / 1e6
    print(
        f"{args.clients} clients × {args.examples} CIFAR-shaped examples ({megabytes:.0f} MB of client data per round)"
    )
    medians = {k: statistics.median(v[1:]) for k, v in seconds.items()}
    for name, value in medians.items():
        print(f"  {name:<22} median round {value * 1000:7.1f} ms")
    print(
        f"  in-memory / file-reading = {medians['in-memory datasets'] / medians['file-reading datasets']:.2f}"
    )


if __name__ == "__main__":
    main()
