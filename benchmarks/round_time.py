"""Round time of FederatedTrainer against a plain tf.function training loop.

One federated round trains `clients_per_round` clients for τ local steps each.
The floor is one `tf.function` loop that does the same number of SGD steps
(clients_per_round × τ) on the same model, batch size and device, with no
federated machinery at all. Everything is measured in this one run, so the
ratios are comparable even on a busy machine; absolute seconds are not.

    uv run python benchmarks/round_time.py [--rounds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import tensorflow as tf

import keras_luar
from keras_luar.quickstart import (
    DigitsSetup,
    digits_cnn,
    digits_data,
    make_digits_trainer,
)


def plain_loop_seconds(setup: DigitsSetup, data, repeats: int) -> list[float]:
    """Seconds per 'round' of a bare tf.function doing the same local steps."""
    tf.keras.utils.set_random_seed(0)
    model = digits_cnn(data.num_classes)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = tf.keras.optimizers.SGD(setup.learning_rate, momentum=setup.momentum)
    ids = sorted(data.client_arrays)[: setup.clients_per_round]

    def round_data(r):
        parts = []
        for i, cid in enumerate(ids):
            x, y = data.client_arrays[cid]
            ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=r * 1000 + i)
            parts.append(ds.repeat().batch(setup.batch_size).take(setup.local_steps))
        out = parts[0]
        for p in parts[1:]:
            out = out.concatenate(p)
        return out

    @tf.function
    def train(ds):
        for x, y in ds:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    train(round_data(0))  # trace once, as the trainer's first round does
    seconds = []
    for r in range(repeats):
        ds = round_data(r + 1)
        start = time.perf_counter()
        train(ds)
        seconds.append(time.perf_counter() - start)
    return seconds


def trainer_seconds(setup: DigitsSetup, data, algorithm: str, delta: int) -> list[float]:
    trainer = make_digits_trainer(setup, algorithm=algorithm, num_recycled_layers=delta, seed=0)
    history = trainer.fit(
        data, rounds=setup.rounds, clients_per_round=setup.clients_per_round, verbose=0
    )
    return history.history["round_time"][1:]  # round 0 includes one-off tracing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients-per-round", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument(
        "--repeats", type=int, default=3,
        help="measure the three in turn this many times, so load drift hits all alike",
    )
    args = parser.parse_args()
    setup = DigitsSetup(
        rounds=args.rounds, clients_per_round=args.clients_per_round, local_steps=args.local_steps
    )
    data = digits_data(setup, seed=0)
    seconds: dict[str, list[float]] = {"FedAvg round": [], "FedLUAR round": [], "plain tf.function": []}
    for _ in range(args.repeats):
        seconds["FedAvg round"] += trainer_seconds(setup, data, "fedavg", 0)
        seconds["FedLUAR round"] += trainer_seconds(setup, data, "fedluar", 2)
        seconds["plain tf.function"] += plain_loop_seconds(setup, data, repeats=max(args.rounds - 1, 3))
    med = {name: statistics.median(v) for name, v in seconds.items()}
    steps = setup.clients_per_round * setup.local_steps
    print(f"keras_luar {keras_luar.__version__}: digits CNN, {setup.clients_per_round} clients × "
          f"τ={setup.local_steps} = {steps} local steps per round, batch {setup.batch_size}, "
          f"{args.repeats} repeats")
    for name, value in med.items():
        print(f"  {name:<18} median {value * 1000:8.1f} ms  ({len(seconds[name])} rounds)")
    print(f"  FedAvg round / plain loop    = {med['FedAvg round'] / med['plain tf.function']:.2f}")
    print(f"  FedLUAR round / plain loop   = {med['FedLUAR round'] / med['plain tf.function']:.2f}")
    print(f"  FedLUAR round / FedAvg round = {med['FedLUAR round'] / med['FedAvg round']:.3f}")


if __name__ == "__main__":
    main()
