"""Cross-device scale: many small clients per round, and large populations to set up.

Part 1, rounds of many clients: FedLUAR on the digits CNN, in process
(``backend="tensorflow"``), K clients per round × τ local steps of batch 16, for
K in 16, 64, 256 and τ in 5, 1 (and 8 clients × τ = 20, where clients run side by
side), on both round-data paths: ``"memory"`` (every sampled client's `tf.data`
pipeline built in Python each round) and ``"tensors"`` (the population held as one
tensor per component, each round's datasets drawn inside TensorFlow; the default in
process). Both are compared with the floor: one plain `tf.function` loop doing the
same K·τ SGD steps on the same model and batches, with no federated machinery.
Printed per setting and path: the median round, its ratio to the floor, and the
fixed cost per client, (round − floor) / K. All settings, paths and floors are
measured in turns in this one run, so the ratios are comparable on a busy machine;
absolute milliseconds are not.

Part 2, set-up of a large population: 100, 1,000 and 3,400 clients of 30
examples each, given as a dict of `tf.data.Dataset` (the FEMNIST scale), FedLUAR
with 50 clients per round: seconds from `fit` to the start of round 0 (checks,
sizes, the process build and its compilation), the time of the rounds after, and
the peak growth of the process's resident memory during `fit` (sampled every
10 ms) next to the population's size in bytes. Each population is set up twice in
a row, with new datasets and a new trainer. Resident memory rarely shrinks, so a
growth is measured above everything the process held before: the run's first `fit`
also pays for TensorFlow's runtime, graphs and allocator pools, and later fits reuse
memory that earlier ones freed.

    uv run python benchmarks/many_clients.py [--repeats 3] [--rounds 6] [--backend tensorflow]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import psutil
import tensorflow as tf

import keras_luar
from keras_luar.data import partition_iid
from keras_luar.quickstart import digits_cnn

BATCH = 16


def _trainer(tau: int, backend: str) -> keras_luar.FederatedTrainer:
    tf.keras.utils.set_random_seed(0)
    return keras_luar.FederatedTrainer(
        digits_cnn(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm="fedluar",
        num_recycled_layers=2,
        local_steps=tau,
        batch_size=BATCH,
        client_optimizer=tf.keras.optimizers.SGD(0.05, momentum=0.9),
        backend=backend,
        seed=0,
    )


def _digits(num_clients: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    return x, y, partition_iid(x, y, num_clients, seed=0)


def round_seconds(k: int, tau: int, rounds: int, backend: str, data, cache: str) -> list[float]:
    """Round times of FedLUAR at K clients × τ steps (the first round, which traces, dropped)."""
    history = _trainer(tau, backend).fit(
        data, rounds=rounds, clients_per_round=k, verbose=0, client_data_cache=cache
    )
    return history.history["round_time"][1:]


def floor_seconds(k: int, tau: int, repeats: int, data) -> list[float]:
    """One plain tf.function loop over the same K·τ batches (per 'round')."""
    x, y, parts = data
    tf.keras.utils.set_random_seed(0)
    model = digits_cnn()
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = tf.keras.optimizers.SGD(0.05, momentum=0.9)

    @tf.function
    def loop(ds):
        for bx, by in ds:
            with tf.GradientTape() as tape:
                loss = loss_fn(by, model(bx, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    rng = np.random.default_rng(0)

    def batches():
        idx = np.concatenate([rng.choice(parts[i], size=BATCH * tau) for i in range(k)])
        return tf.data.Dataset.from_tensor_slices((x[idx], y[idx])).batch(BATCH)

    loop(batches())  # trace
    out = []
    for _ in range(repeats):
        ds = batches()
        began = time.perf_counter()
        loop(ds)
        out.append(time.perf_counter() - began)
    return out


class _PeakRss:
    """Samples the resident memory of this process every 10 ms while active."""

    def __init__(self):
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class _FirstRound(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.at = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.at is None:
            self.at = time.perf_counter()


def set_up(num_clients: int, backend: str, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(num_clients)
    x = rng.random((num_clients, 30, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, (num_clients, 30)).astype(np.int32)
    datasets = {
        f"writer_{i:04d}": tf.data.Dataset.from_tensor_slices((x[i], y[i]))
        for i in range(num_clients)
    }
    trainer = _trainer(5, backend)
    first = _FirstRound()
    began = time.perf_counter()
    with _PeakRss() as rss:
        history = trainer.fit(
            datasets, rounds=rounds, clients_per_round=50, verbose=0, callbacks=[first]
        )
    return {
        "setup_s": first.at - began,
        "round_s": statistics.median(history.history["round_time"][1:]),
        "peak_mb": (rss.peak - rss.start) / 2**20,
        "data_mb": (x.nbytes + y.nbytes) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--backend", default="tensorflow", choices=["tff", "tensorflow"])
    parser.add_argument("--populations", type=int, nargs="+", default=[100, 1000, 3400])
    parser.add_argument("--skip-rounds", action="store_true", help="only part 2")
    args = parser.parse_args()
    print(
        f"keras_luar {keras_luar.__version__}, backend {args.backend}, "
        f"{psutil.cpu_count()} CPU cores, {args.repeats} repeats"
    )
    if not args.skip_rounds:
        data = _digits(300)
        settings = [(8, 20)] + [(k, tau) for tau in (5, 1) for k in (16, 64, 256)]
        paths = ("memory", "tensors") if args.backend == "tensorflow" else ("memory",)
        rounds = {(s, p): [] for s in settings for p in paths}
        floors = {s: [] for s in settings}
        for _ in range(args.repeats):
            for k, tau in settings:
                for path in paths:
                    rounds[((k, tau), path)] += round_seconds(
                        k, tau, args.rounds, args.backend, data, path
                    )
                floors[(k, tau)] += floor_seconds(k, tau, max(args.rounds - 1, 3), data)
        print(
            "\nclients × τ   floor ms   path       round ms   round ÷ floor   fixed ms per client"
        )
        for k, tau in settings:
            f = statistics.median(floors[(k, tau)])
            for path in paths:
                r = statistics.median(rounds[((k, tau), path)])
                print(
                    f"{k:>7} × {tau:<3} {f * 1e3:8.1f}   {path:8s} {r * 1e3:10.1f} {r / f:15.2f} "
                    f"{(r - f) / k * 1e3:21.3f}"
                )
    print(
        "\nclients   set-up s (first / again)   round s   peak RSS growth MB (first / again)"
        "   data MB"
    )
    for n in args.populations:
        first, again = (set_up(n, args.backend, max(args.rounds // 2, 3)) for _ in range(2))
        setup = f"{first['setup_s']:.1f} / {again['setup_s']:.1f}"
        peak = f"{first['peak_mb']:.0f} / {again['peak_mb']:.0f}"
        print(f"{n:>7} {setup:>26} {again['round_s']:9.3f} {peak:>36} {first['data_mb']:9.1f}")


if __name__ == "__main__":
    main()
