"""Round data drawn inside TensorFlow: the population held once, each client's batches by index.

With many small clients per round, building every sampled client's `tf.data`
pipeline in Python each round (about 1 ms a client on a 2-core CPU) costs as much as
their training. When the clients are in memory as tensor slices (arrays,
``(x, y, partitions)``, `FederatedData`, or untransformed
`tf.data.Dataset.from_tensor_slices` datasets) and the rounds run in process,
`IndexedPopulation` instead

1. concatenates the clients' examples once, one tensor per component, with each
   client's offset and size (every client's data then lives in one place, and
   nothing is copied per round but the sampled clients' own examples);
2. traces, once, a function that makes one client's round dataset from
   (client index, round): its slice of the population, shuffled with the seeds
   `RoundInputs` uses, repeated, augmented and batched by the same
   `round_batches`; and once per number of clients per round a function that
   calls it for each sampled client;
3. runs that one function per round. Its results are dataset variants, which
   the in-process backend hands to the clients' training as they are.

The batches are the per-client path's, element for element and in the same
order, so a run gives the same History either way
(``tests/training/test_indexed_data.py``); as the seeds depend only on (run
seed, round, client), a resumed run draws what the uninterrupted one drew.

The population stays in host memory: tf.data runs on the host, and the
clients' training copies each batch to the device, as it does on the
per-client path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from keras_luar._keras_compat import seeded_shuffle
from keras_luar.algorithms.weighting import SizedClientData
from keras_luar.training.client_data import _shuffle_seed, round_batches, round_dataset_options

if TYPE_CHECKING:
    from keras_luar.training.client_data import Clients, RoundInputs

# Above this many bytes the population is not copied into one tensor per component.
POPULATION_LIMIT = 2**31


def unindexable(clients: Clients) -> str | None:
    """Why `clients` cannot be held as one population, or None when they can.

    Args:
      clients: The checked clients.

    Returns:
      A sentence naming the first obstacle, or None.
    """
    from keras_luar._tff_internals import tensor_slices

    if clients.batched:
        return "the client datasets are batched (they keep their own batches)"
    spec = clients.element_spec
    size = 0
    for cid, ds in clients.datasets.items():
        if ds.element_spec != spec:
            return f"client {cid!r} has elements of another spec than the first client's"
        tensors = tensor_slices(ds)
        if tensors is None:
            return (
                f"client {cid!r} is not an untransformed tf.data.Dataset.from_tensor_slices "
                "dataset (so its examples are only known by iterating it)"
            )
        size += sum(int(np.prod(t.shape)) * t.dtype.size for t in tensors)
        if size > POPULATION_LIMIT:
            return f"the population holds more than {POPULATION_LIMIT} bytes"
    return None


# Numeric dtypes a numpy buffer can hand to TensorFlow without a copy (DLPack).
_SHAREABLE = frozenset(
    tf.dtypes.as_dtype(d)
    for d in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
              "uint16", "uint32", "uint64")
)  # fmt: skip
_ALIGNMENT = 64  # bytes; what TensorFlow's CPU kernels (Eigen) assume of a tensor's buffer


def concatenated(tensors: Sequence[tf.Tensor], dtype: tf.DType) -> tf.Tensor:
    """The host tensors concatenated along axis 0, with one copy of their data.

    ``tf.constant`` of a numpy array grew resident memory by about twice the array's
    bytes (measured: 390 MB for a 200 MB array), and ``tf.concat`` of 3,400 small tensors
    takes ten times numpy's time. So each client's tensor is copied, through a
    numpy view that shares its memory, into one 64-byte-aligned numpy buffer, which
    TensorFlow then takes over through DLPack without copying (the tensor keeps the
    buffer alive). Dtypes DLPack does not carry (strings, bool) go through
    ``tf.constant``.

    Args:
      tensors: Host tensors of equal trailing shape and of `dtype`.
      dtype: Their dtype.

    Returns:
      A host tensor of ``sum(len(t))`` rows.
    """
    views = [np.asarray(t) for t in tensors]  # no copy: views of the eager tensors
    if dtype not in _SHAREABLE:
        return tf.constant(np.concatenate(views), dtype)
    rows = sum(len(v) for v in views)
    shape = (rows, *views[0].shape[1:])
    itemsize = np.dtype(dtype.as_numpy_dtype).itemsize
    nbytes = int(np.prod(shape)) * itemsize
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _ALIGNMENT
    out = raw[start : start + nbytes].view(dtype.as_numpy_dtype).reshape(shape)
    np.concatenate(views, out=out)
    return tf.experimental.dlpack.from_dlpack(out.__dlpack__())


def _options() -> tf.data.Options:
    """`round_dataset_options`, and no private thread pool.

    tf.data gives every iterator a private thread pool, by default of one
    thread per core, started when the iterator is made and joined when it is
    freed: for every client in every round. A negative size (TensorFlow's
    ``RootDataset`` makes a pool only for a size of 0 or more) leaves the
    iterator on the runner of the function that iterates it. This pipeline
    (slices, shuffle, repeat, a sequential map, batch, take) makes each
    element on the thread that asks for it, with nothing running ahead, so it
    needs no pool of its own. At 256 clients × τ = 1 the round took
    1.16–1.23 × the floor with a pool (of one thread or of one per core) and
    0.97 × without one (``benchmarks/many_clients.py``). Users' own datasets, on
    the per-client path, keep tf.data's default: their parallel maps or
    interleaves would otherwise share the training's threads.
    """
    options = round_dataset_options()
    options.threading.private_threadpool_size = -1
    return options


class IndexedPopulation:
    """Every client's examples as one tensor per component, and each round's datasets.

    Args:
      inputs: The `RoundInputs` it draws for (its clients, τ, B, run seed and
        augmentation); `unindexable` must have returned None for its clients.
    """

    def __init__(self, inputs: RoundInputs):
        from keras_luar._tff_internals import tensor_slices

        clients = inputs.clients
        self._spec = clients.element_spec
        per_client = [tensor_slices(clients.datasets[cid]) for cid in clients.ids]
        counts = [int(t[0].shape[0]) for t in per_client]
        with tf.device("/CPU:0"):
            self._leaves = [
                concatenated([t[j] for t in per_client], spec.dtype)
                for j, spec in enumerate(tf.nest.flatten(self._spec))
            ]
            self._offsets = tf.constant(np.cumsum([0, *counts[:-1]]), tf.int64)
            self._counts = tf.constant(counts, tf.int64)
            self._sizes = tf.constant([clients.sizes[cid] for cid in clients.ids], tf.float32)
        self._inputs = inputs
        self._client = None  # (concrete function, element spec of its batches)
        self._rounds: dict[tuple[int, bool], Any] = {}

    def round_data(self, chosen: Sequence[int], round_num: int, *, sized: bool) -> list:
        """The round's input of each chosen client, as `RoundInputs.round_data` makes it.

        Args:
          chosen: The sampled clients' indices.
          round_num: The round.
          sized: Pack each client's data set size along (``"example"`` weighting).

        Returns:
          One dataset (or `SizedClientData`) per chosen client, in order.
        """
        function, spec = self._round_function(len(chosen), sized)
        variants = function(
            tf.constant(np.asarray(chosen, np.int64)), tf.constant(round_num, tf.int64)
        )
        from_variant = tf.data.experimental.from_variant
        if not sized:
            return [from_variant(v, spec) for v in variants]
        size_spec = tf.TensorSpec([], tf.float32)
        return [
            SizedClientData(from_variant(b, spec), from_variant(n, size_spec))
            for b, n in zip(variants[0::2], variants[1::2], strict=True)
        ]

    def dataset(self, client_index: int, round_num: int) -> tf.data.Dataset:
        """One client's round dataset (as `RoundInputs.dataset` makes it)."""
        return self.round_data([client_index], round_num, sized=False)[0]

    def _client_function(self):
        """(index, round) → the client's round dataset and size dataset, as variants."""
        if self._client is None:
            found = {}

            def client(index, round_num):
                offset, count = self._offsets[index], self._counts[index]
                parts = [leaf[offset : offset + count] for leaf in self._leaves]
                source = tf.data.Dataset.from_tensor_slices(
                    tf.nest.pack_sequence_as(self._spec, parts)
                ).with_options(_options())
                inputs = self._inputs
                shuffle_seed = _shuffle_seed(round_num, index)  # on tensors, as on ints
                shuffled = seeded_shuffle(source, tf.maximum(count, 1), inputs.seed, shuffle_seed)
                batches = round_batches(
                    shuffled, shuffle_seed, run_seed=inputs.seed, local_steps=inputs.local_steps,
                    batch_size=inputs.batch_size, augmentation=inputs.augmentation,
                )  # fmt: skip
                found["spec"] = batches.element_spec
                size = tf.data.Dataset.from_tensors(self._sizes[index])
                return [tf.data.experimental.to_variant(d) for d in (batches, size)]

            signature = [tf.TensorSpec([], tf.int64)] * 2
            with tf.device("/CPU:0"):  # tf.data runs on the host
                concrete = tf.function(
                    client,
                    input_signature=signature,
                    autograph=False,
                    experimental_attributes={"_noinline": True},
                ).get_concrete_function()
            self._client = (concrete, found["spec"])
        return self._client

    def _round_function(self, num_clients: int, sized: bool):
        client, spec = self._client_function()
        key = (num_clients, sized)
        if key not in self._rounds:

            def round_data(indices, round_num):
                out = []
                for k in range(num_clients):
                    batches, size = client(indices[k], round_num)
                    out += [batches, size] if sized else [batches]
                return out

            signature = [tf.TensorSpec([num_clients], tf.int64), tf.TensorSpec([], tf.int64)]
            self._rounds[key] = tf.function(
                round_data, input_signature=signature, autograph=False
            ).get_concrete_function()
        return self._rounds[key], spec
