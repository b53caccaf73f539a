"""Round time of FederatedTrainer on each backend against plain tf.function loops.

One federated round trains `clients_per_round` clients for τ local steps each.
The floor is a `tf.function` loop that does the same number of SGD steps
(clients_per_round × τ) on the same model, batch size, data and device, with
no federated machinery at all; two ways of writing that loop are timed and
the faster one is the floor. FedAvg and FedLUAR rounds are timed on both
execution paths: ``tff`` (TFF's C++ worker) and ``tensorflow`` (the same
computations in this process, `keras_luar.backends.InProcessContext`).
Everything is measured in this one run, in turns, so the ratios are comparable
even on a busy machine; absolute seconds are not. Each repeat's ratio to the
floor measured right after it is also printed ("paired"), which cancels the
slow drifts in CPU speed that shared machines show.

    uv run python benchmarks/round_time.py [--rounds 10] [--repeats 3] [--backends tff tensorflow]
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
from keras_luar.trainer import round_dataset_options

FLOORS = ("iterator loop", "for-in loop")


def plain_loop_seconds(setup: DigitsSetup, data, repeats: int) -> dict[str, list[float]]:
    """Seconds per 'round' of bare tf.function loops doing the same local steps.

    Two plain loops, as a Keras user would write them: ``for x, y in iter(ds)``
    (a while loop over an iterator, what the trainer's clients run) and
    ``for x, y in ds`` (AutoGraph turns it into a dataset reduce). Both get the
    clients' batches as one concatenated dataset with the trainer's tf.data
    options, so they pay for one iterator per round where the trainer pays
    for one per client. The faster of the two is the floor.
    """
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
        return out.with_options(round_dataset_options())

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def iterator_loop(ds):
        for x, y in iter(ds):
            step(x, y)

    @tf.function
    def for_in_loop(ds):
        for x, y in ds:
            step(x, y)

    loops = dict(zip(FLOORS, (iterator_loop, for_in_loop), strict=True))
    for loop in loops.values():
        loop(round_data(0))  # trace once, as the trainer's first round does
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(repeats):
        for name, loop in loops.items():
            ds = round_data(r + 1)
            start = time.perf_counter()
            loop(ds)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def trainer_seconds(
    setup: DigitsSetup, data, algorithm: str, delta: int, backend: str, parallel: int | None = None
) -> list[float]:
    extra = {"parallel_clients": parallel} if backend == "tensorflow" and parallel else {}
    trainer = make_digits_trainer(
        setup, algorithm=algorithm, num_recycled_layers=delta, seed=0, backend=backend, **extra
    )
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
        "--backends", nargs="+", default=["tff", "tensorflow"], choices=["tff", "tensorflow"]
    )
    parser.add_argument(
        "--parallel-clients",
        type=int,
        default=None,
        help="clients trained at once on the tensorflow backend (default: the trainer's, 2)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="measure the three in turn this many times, so load drift hits all alike",
    )
    args = parser.parse_args()
    setup = DigitsSetup(
        rounds=args.rounds, clients_per_round=args.clients_per_round, local_steps=args.local_steps
    )
    data = digits_data(setup, seed=0)
    names = [f"{m} {b}" for b in args.backends for m in ("FedAvg", "FedLUAR")]
    seconds: dict[str, list[float]] = {name: [] for name in [*names, *FLOORS]}
    paired: dict[str, list[float]] = {name: [] for name in names}  # per repeat, ÷ its floor
    for _ in range(args.repeats):
        medians = {}
        for backend in args.backends:
            p = args.parallel_clients
            for method, algorithm, delta in (("FedAvg", "fedavg", 0), ("FedLUAR", "fedluar", 2)):
                times = trainer_seconds(setup, data, algorithm, delta, backend, p)
                seconds[f"{method} {backend}"] += times
                medians[f"{method} {backend}"] = statistics.median(times)
        floors = plain_loop_seconds(setup, data, repeats=max(args.rounds - 1, 3))
        for name, values in floors.items():
            seconds[name] += values
        floor_now = min(statistics.median(v) for v in floors.values())
        for name in names:
            paired[name].append(medians[name] / floor_now)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    floor = min(med[name] for name in FLOORS)
    steps = setup.clients_per_round * setup.local_steps
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(
        f"keras_luar {keras_luar.__version__}: digits CNN, {setup.clients_per_round} clients × "
        f"τ={setup.local_steps} = {steps} local steps per round, batch {setup.batch_size}, "
        f"{args.repeats} repeats, TensorFlow sees: {device}, "
        f"{args.parallel_clients or 'default'} client(s) at once in process"
    )
    for name, value in med.items():
        print(f"  {name:<20} median {value * 1000:8.1f} ms  ({len(seconds[name])} rounds)")
    print(f"  floor = the faster plain loop = {floor * 1000:.1f} ms")
    print(
        "  round ÷ floor (all rounds' median ÷ floor; median over repeats of each repeat's ratio)"
    )
    for backend in args.backends:
        for method in ("FedAvg", "FedLUAR"):
            name = f"{method} {backend}"
            label = f"{name} / floor"
            print(
                f"  {label:<32} = {med[name] / floor:.2f}   paired {statistics.median(paired[name]):.2f}"
            )
        label = f"FedLUAR / FedAvg ({backend})"
        print(f"  {label:<32} = {med[f'FedLUAR {backend}'] / med[f'FedAvg {backend}']:.3f}")
    if len(args.backends) == 2:
        for method in ("FedAvg", "FedLUAR"):
            label = f"{method} tensorflow / tff"
            print(f"  {label:<32} = {med[f'{method} tensorflow'] / med[f'{method} tff']:.2f}")


if __name__ == "__main__":
    main()
