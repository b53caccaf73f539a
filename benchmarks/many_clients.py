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
10 ms) next to the population's size in bytes. Each population runs in a fresh
process, so no run reuses memory another one freed. A fit's growth also holds
what does not depend on the population (TensorFlow's graphs, the traced rounds,
allocator pools), so each size is also run with a population of 50 clients (the
clients of one round; the baseline), and the growth above the baseline's is the
population's own share. That is printed for the digits' 8×8 images (25 MB for
3,400 clients, of the order of the baseline's own noise) and for 28×28 images,
FEMNIST's size (320 MB for 3,400 clients of 30 examples), where the data dominates.

    uv run python benchmarks/many_clients.py [--repeats 3] [--rounds 6] [--backend tensorflow]
                                              [--skip-rounds] [--populations 100 1000 3400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import tensorflow as tf

import keras_luar
from keras_luar.data import partition_iid
from keras_luar.quickstart import digits_cnn

BATCH = 16


def _trainer(
    tau: int, backend: str, make_model=digits_cnn, num_recycled_layers: int = 2
) -> keras_luar.FederatedTrainer:
    tf.keras.utils.set_random_seed(0)
    return keras_luar.FederatedTrainer(
        make_model(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        algorithm="fedluar",
        num_recycled_layers=num_recycled_layers,
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


def _image_cnn(side: int) -> tf.keras.Model:
    """The digits CNN for 8×8 images; a small CNN for larger ones."""
    if side == 8:
        return digits_cnn()
    return tf.keras.Sequential(
        [
            tf.keras.Input((side, side, 1)),
            tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv"),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(10, name="logits"),
        ]
    )


def set_up(num_clients: int, backend: str, rounds: int, side: int = 8) -> dict[str, float]:
    """One fit on `num_clients` clients of 30 side×side images: set-up, rounds, memory."""
    rng = np.random.default_rng(num_clients)
    x = rng.random((num_clients, 30, side, side, 1), dtype=np.float32)
    y = rng.integers(0, 10, (num_clients, 30)).astype(np.int32)
    datasets = {
        f"writer_{i:04d}": tf.data.Dataset.from_tensor_slices((x[i], y[i]))
        for i in range(num_clients)
    }
    trainer = _trainer(5, backend, lambda: _image_cnn(side), num_recycled_layers=1)
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


def set_up_in_a_fresh_process(
    num_clients: int, backend: str, rounds: int, side: int
) -> dict[str, float]:
    """`set_up` in a new Python process (so it reuses no memory an earlier run freed)."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(num_clients),
        backend,
        str(rounds),
        str(side),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        num_clients, backend, rounds, side = sys.argv[2:6]
        print(json.dumps(set_up(int(num_clients), backend, int(rounds), int(side))))
        return
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
    rounds = max(args.rounds // 2, 3)
    print(
        "\nimage  clients   set-up s   round s   peak RSS growth MB   above the baseline MB"
        "   data MB   above the baseline ÷ data"
    )
    for side, populations in ((8, args.populations), (28, [max(args.populations)])):
        base = set_up_in_a_fresh_process(50, args.backend, rounds, side)
        for n in [50, *populations]:
            run = base if n == 50 else set_up_in_a_fresh_process(n, args.backend, rounds, side)
            above = run["peak_mb"] - base["peak_mb"]
            ratio = "(baseline)" if n == 50 else f"{above / run['data_mb']:.2f}"
            print(
                f"{side:>2}×{side:<2} {n:>8} {run['setup_s']:10.1f} {run['round_s']:9.3f} "
                f"{run['peak_mb']:20.0f} {above:23.0f} {run['data_mb']:9.1f} {ratio:>27}"
            )


if __name__ == "__main__":
    main()
