"""Whole short fits on each backend: what a fit pays before and in its first round.

A fit builds its TFF computations, then its first round compiles them: TFF's
runtime serializes them to its worker; the in-process backend imports every
TensorFlow block into a function, traces the round into one call and lets
TensorFlow optimize it. Later rounds reuse all of it. Short fits (a test suite,
a notebook trying options, a sweep of few rounds each) pay this fixed cost again
and again, so this prints, per backend, the median over repeats of: the whole
`fit`, its first round and its later rounds. FedLUAR on the digits CNN, 8 clients,
4 per round, τ = 5, batch 16, 3 rounds (the size of the trainer tests). Each
repeat runs one fit per backend in turns, in this one process, after one fit per
backend that is not counted (the first `fit` of a process also pays for
TensorFlow's own start-up).

    uv run python benchmarks/short_fits.py [--repeats 5] [--rounds 3] [--algorithm fedluar]
"""

from __future__ import annotations

import argparse
import statistics
import time

import tensorflow as tf

import keras_luar
from keras_luar.quickstart import digits_cnn


def one_fit(backend: str, algorithm: str, rounds: int, data) -> tuple[float, float, float]:
    """(whole fit, first round, median later round) in seconds."""
    tf.keras.utils.set_random_seed(0)
    options = {"num_recycled_layers": 2} if algorithm == "fedluar" else {}
    trainer = keras_luar.FederatedTrainer(
        digits_cnn(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm=algorithm,
        local_steps=5,
        batch_size=16,
        client_optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9),
        backend=backend,
        seed=0,
        **options,
    )
    began = time.perf_counter()
    history = trainer.fit(data, rounds=rounds, clients_per_round=4, verbose=0)
    whole = time.perf_counter() - began
    times = history.history["round_time"]
    return whole, times[0], statistics.median(times[1:]) if len(times) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algorithm", default="fedluar")
    args = parser.parse_args()
    data = keras_luar.data.load_digits_federated(num_clients=8, alpha=0.5, seed=0)
    backends = ("tff", "tensorflow")
    for backend in backends:  # not counted: the process's first fit on each backend
        one_fit(backend, args.algorithm, args.rounds, data)
    results = {b: [] for b in backends}
    for _ in range(args.repeats):
        for backend in backends:
            results[backend].append(one_fit(backend, args.algorithm, args.rounds, data))
    print(
        f"keras_luar {keras_luar.__version__}, {args.algorithm}, {args.rounds} rounds, "
        f"{args.repeats} repeats (medians)"
    )
    print("backend       whole fit s   first round s   later rounds s")
    for backend in backends:
        whole, first, later = (statistics.median(r[i] for r in results[backend]) for i in range(3))
        print(f"{backend:12s} {whole:12.2f} {first:15.2f} {later:16.3f}")
    tff, tensorflow = (statistics.median(r[0] for r in results[b]) for b in backends)
    print(f"in process ÷ tff, whole fit: {tensorflow / tff:.2f}")


if __name__ == "__main__":
    main()
