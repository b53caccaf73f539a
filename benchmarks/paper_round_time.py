"""How long one paper-scale FedLUAR round takes on this machine, for each benchmark.

The paper's rounds are 32 clients × τ = 20 local steps at the benchmark's batch
size. The data's content does not change the cost of a step, so each client
gets random data of the benchmark's shapes (nothing to download). A round of
the full paper scale is timed where it fits in ``--budget`` seconds; for the
others, ``--clients`` clients × ``--steps`` steps are timed and the time is
scaled by (32 × 20) / (clients × steps), since local training dominates a
round. Each line says which it is. The first round (tracing, TFF set-up) is
not counted: rounds 2.. are averaged.

    uv run python benchmarks/paper_round_time.py                 # every benchmark
    uv run python benchmarks/paper_round_time.py --only cifar10_resnet20 --full
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

import keras_luar
from keras_luar import models
from keras_luar.data.digits import FederatedData

PAPER_CLIENTS, PAPER_STEPS = 32, 20

# name: (model builder, example shape, token vocabulary (None: float images), batch, δ)
BENCHMARKS = {
    "femnist_cnn": (lambda: models.femnist_cnn(), (28, 28, 1), None, 20, 2),
    "cifar10_resnet20": (lambda: models.resnet20(), (32, 32, 3), None, 32, 12),
    "cifar100_wrn28": (lambda: models.wrn28_10(), (32, 32, 3), None, 32, 12),
    "agnews_text": (lambda: models.text_classifier(), (128,), 20_000, 128, None),
    "shakespeare": (lambda: models.char_rnn(), (80,), 90, 10, 2),
}


def synthetic(model, shape, vocabulary, batch, clients, steps, seed=0):
    rng = np.random.default_rng(seed)
    n = batch * steps
    out_shape = model.output_shape[1:]
    num_classes = out_shape[-1]
    arrays = {}
    for c in range(clients):
        if vocabulary is not None:
            x = rng.integers(1, vocabulary, size=(n, *shape)).astype(np.int32)
        else:
            x = rng.random((n, *shape), dtype=np.float32)
        y = rng.integers(0, num_classes, size=(n, *out_shape[:-1])).astype(np.int32)
        arrays[f"client_{c:03d}"] = (x, y)
    data = {k: tf.data.Dataset.from_tensor_slices(v) for k, v in arrays.items()}
    test = arrays["client_000"]
    return FederatedData(data, arrays, test, num_classes, tuple(shape))


def time_rounds(name, clients, steps, rounds):
    build, shape, vocabulary, batch, delta = BENCHMARKS[name]
    tf.keras.utils.set_random_seed(0)
    model = build()
    layout = keras_luar.describe_model(model)
    if delta is None:
        delta = min(max(1, round(30 / 40 * layout.num_candidates)), layout.num_candidates - 1)
    data = synthetic(model, shape, vocabulary, batch, clients, steps)
    trainer = keras_luar.FederatedTrainer(
        model,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm="fedluar",
        num_recycled_layers=delta,
        local_steps=steps,
        batch_size=batch,
        client_optimizer=tf.keras.optimizers.SGD(0.01, momentum=0.9),
    )
    history = trainer.fit(data, rounds=rounds, clients_per_round=clients, verbose=0)
    seconds = history.history["round_time"][1:]
    return float(np.mean(seconds)), layout, model.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--clients", type=int, default=4, help="clients timed when scaled")
    parser.add_argument("--steps", type=int, default=5, help="local steps timed when scaled")
    parser.add_argument("--rounds", type=int, default=3, help="rounds timed (the first is dropped)")
    parser.add_argument("--full", action="store_true", help="time 32 clients × 20 steps")
    args = parser.parse_args()
    if len(args.only) > 1:
        # One process per benchmark: each gets a fresh TFF worker and Keras state.
        rest = [a for a in sys.argv[1:] if a not in args.only and a != "--only"]
        for name in args.only:
            subprocess.run([sys.executable, __file__, "--only", name, *rest], check=True)
        return
    clients, steps = (PAPER_CLIENTS, PAPER_STEPS) if args.full else (args.clients, args.steps)
    print(
        f"keras_luar {keras_luar.__version__}, TFF CPU runtime; timed {clients} clients × "
        f"{steps} steps, mean of rounds 2..{args.rounds}",
        flush=True,
    )
    for name in args.only:
        began = time.perf_counter()
        seconds, layout, params = time_rounds(name, clients, steps, args.rounds)
        scale = PAPER_CLIENTS * PAPER_STEPS / (clients * steps)
        how = "measured" if scale == 1 else f"scaled ×{scale:.0f} from {seconds:.1f} s"
        print(
            f"{name:<18} {params:>10,} params, L={layout.num_candidates:<3} "
            f"paper-scale round ≈ {seconds * scale:8.1f} s ({how}; "
            f"{time.perf_counter() - began:.0f} s wall)",
            flush=True,
        )


if __name__ == "__main__":
    main()
