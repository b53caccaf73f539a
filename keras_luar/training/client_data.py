"""Client data from the forms users have it to each round's inputs, in one pass.

`FederatedTrainer.fit` accepts per-client data as a list or dict of
`tf.data.Dataset`s (unbatched, or batched as the user likes them), a list or dict
of ``(x, y)`` arrays, a `tff.simulation.datasets.ClientData`, a
`keras_luar.data.FederatedData`, or arrays with a partition, ``(x, y,
partitions)``, where ``partitions`` is a list of index arrays as returned by
`keras_luar.data.partition_dirichlet`. The data goes one way:

1. `as_clients` turns every form into `Clients`: one dataset per client, plus the
   arrays when the clients came as arrays (so checks and sizes need no pass over
   datasets);
2. `keras_luar.training.data_checks.check_clients` checks them against the model
   and counts every client's examples (n_i, the weight of ``"example"``
   weighting) before round 0;
3. `RoundInputs` makes each round's inputs of the sampled clients (in process,
   for clients in memory, `keras_luar.training.indexed_data` draws the same
   batches inside TensorFlow, with no Python per client).

A round's input of a client:

* unbatched data: a fresh shuffle of the client's examples seeded by (run seed,
  round, client), repeated as needed, batched, τ batches (and the seeded
  augmentation, if any);
* pre-batched data: the client's batches are used as they are and in turn. Each
  round continues where the client's last round stopped, cycling through its
  batches; each pass over them has its own order, drawn from (run seed, client,
  pass). So a client with fewer batches than τ repeats them within the round,
  and over the rounds every batch is used as often as any other. The position
  of every client (its cursor) is saved in checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from keras_luar._keras_compat import global_seed


def _invalid(message: str) -> ValueError:
    return ValueError(f"Invalid value for argument `client_data`. {message}")


@dataclasses.dataclass
class Clients:
    """Every client's data, as the trainer holds it.

    Attributes:
      datasets: Client id → dataset of ``(x, y)`` elements, in the given order.
      arrays: Client id → ``(x, y)`` arrays when every client came as arrays
        (None otherwise).
      batched: Whether the elements are batches (set by the checks).
      counts: Client id → number of elements (examples, or batches when batched).
      sizes: Client id → number of examples, n_i.
    """

    datasets: dict[str, tf.data.Dataset]
    arrays: dict[str, tuple[Any, Any]] | None = None
    batched: bool = False
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """The client ids, in order."""
        return list(self.datasets)

    @property
    def element_spec(self) -> Any:
        """The element spec every client shares."""
        return next(iter(self.datasets.values())).element_spec


def as_clients(client_data: Any) -> Clients:
    """`Clients` for any supported client-data form (see the module docstring).

    Raises:
      TypeError: For an unsupported type.
      ValueError: For no clients, a client that is neither a dataset nor arrays,
        or bad partitions.
    """
    from keras_luar.data.federated import FederatedData

    arrays = None
    if isinstance(client_data, FederatedData):
        datasets = dict(client_data.client_data)
        arrays = dict(client_data.client_arrays)
    elif (
        isinstance(client_data, tuple) and len(client_data) == 3 and not _is_array_pair(client_data)
    ):
        arrays = _from_partitions(*client_data)
        datasets = {cid: tf.data.Dataset.from_tensor_slices(xy) for cid, xy in arrays.items()}
    elif isinstance(client_data, Mapping) or (
        isinstance(client_data, Sequence) and not isinstance(client_data, str | tuple)
    ):
        items = client_data.items() if isinstance(client_data, Mapping) else enumerate(client_data)
        given = {str(k): v for k, v in items}
        datasets = {}
        for cid, value in given.items():
            if _is_array_pair(value):  # a client as (x, y) arrays, as model.fit takes them
                datasets[cid] = tf.data.Dataset.from_tensor_slices(tuple(value))
            elif isinstance(value, tf.data.Dataset):
                datasets[cid] = value
            else:
                raise _invalid(
                    "Expected a tf.data.Dataset or (x, y) arrays for every client. Received: "
                    f"client {cid!r} holds a {type(value).__name__}"
                )
        if given and all(_is_array_pair(v) for v in given.values()):
            arrays = {cid: tuple(v) for cid, v in given.items()}
        else:
            arrays = _sliced_arrays(datasets)
    elif _is_client_data(client_data):
        datasets = {
            str(cid): client_data.create_tf_dataset_for_client(cid)
            for cid in client_data.client_ids
        }
    else:
        raise TypeError(
            "Invalid value for argument `client_data`. Expected a list or dict of "
            "tf.data.Dataset or (x, y) arrays, a tff.simulation.datasets.ClientData, a "
            f"FederatedData or (x, y, partitions). Received: client_data of type "
            f"{type(client_data).__name__}"
        )
    if not datasets:
        raise _invalid("Expected at least one client. Received: no clients")
    return Clients(datasets, arrays)


def as_client_datasets(client_data: Any) -> dict[str, tf.data.Dataset]:
    """Returns ``{client_id: dataset}`` for any supported client-data form.

    Args:
      client_data: See the module docstring.

    Returns:
      An insertion-ordered dict from client id to dataset.

    Raises:
      TypeError: For an unsupported type.
      ValueError: For no clients, or bad partitions.

    Examples:
      >>> import numpy as np
      >>> x, y = np.zeros((6, 2), np.float32), np.arange(6) % 2
      >>> sorted(as_client_datasets((x, y, [np.arange(3), np.arange(3, 6)])))
      ['0', '1']
    """
    return as_clients(client_data).datasets


def _is_array_pair(obj: Any) -> bool:
    """(x, y) of arrays (x may be a tuple or dict of arrays for several inputs)."""
    if not (isinstance(obj, tuple) and len(obj) == 2):
        return False
    leaves = tf.nest.flatten(obj)
    return bool(leaves) and all(isinstance(v, np.ndarray) or tf.is_tensor(v) for v in leaves)


def _sliced_arrays(datasets: dict[str, tf.data.Dataset]) -> dict[str, tuple[Any, Any]] | None:
    """The clients' ``(x, y)`` arrays when every dataset slices them as it is, else None.

    Datasets made by `tf.data.Dataset.from_tensor_slices((x, y))` and not transformed
    yield exactly the slices of x and y, so the checks and the counts can read the
    arrays in one vectorized pass instead of iterating 3,400 datasets one by one.
    """
    from keras_luar._tff_internals import tensor_slices

    arrays = {}
    for cid, ds in datasets.items():
        spec = ds.element_spec
        tensors = tensor_slices(ds) if isinstance(spec, tuple) and len(spec) == 2 else None
        if tensors is None:
            return None
        # np.asarray shares the tensors' memory (`.numpy()` would copy the population)
        arrays[cid] = tuple(tf.nest.pack_sequence_as(spec, [np.asarray(t) for t in tensors]))
    return arrays


def _is_client_data(obj: Any) -> bool:
    return hasattr(obj, "client_ids") and hasattr(obj, "create_tf_dataset_for_client")


def _from_partitions(x, y, partitions) -> dict[str, tuple[Any, Any]]:
    xs = tf.nest.map_structure(np.asarray, x)
    y = np.asarray(y)
    n = len(tf.nest.flatten(xs)[0])
    if n != len(y):
        raise _invalid(f"Expected x and y of equal length. Received: {n} and {len(y)}")
    out = {}
    for i, idx in enumerate(partitions):
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise _invalid(f"Partition {i} holds indices outside [0, {n}).")
        out[str(i)] = (tf.nest.map_structure(lambda a, idx=idx: a[idx], xs), y[idx])
    return out


def round_dataset_options() -> tf.data.Options:
    """tf.data options for a client's data of one round.

    Every round makes a fresh iterator over each sampled client's data, for
    only τ steps. At each iterator's creation tf.data would rewrite the
    pipeline with its default graph optimizations and start an autotuning
    model, which cost about 10 ms per client on a CPU and cannot pay off in
    τ steps; both are off here (set on each client's dataset, they hold for
    the pipelines built on it). The elements and their order do not change.
    """
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.autotune.enabled = False
    return options


def sample_clients(seed: int, num_clients: int, per_round: int, round_num: int) -> np.ndarray:
    """The sorted indices of a round's clients, drawn by (seed, round) without replacement."""
    rng = np.random.default_rng([seed, round_num])
    return np.sort(rng.choice(num_clients, size=per_round, replace=False))


def _shuffle_seed(round_num: Any, client_index: Any) -> Any:
    """The shuffle seed of a client's round: of ints, or of int64 tensors when traced."""
    return (round_num * 100_003 + client_index) % (2**31 - 1)


def round_batches(
    shuffled: tf.data.Dataset,
    shuffle_seed: Any,
    *,
    run_seed: int,
    local_steps: int,
    batch_size: int,
    augmentation: Callable | None,
) -> tf.data.Dataset:
    """A client's τ batches of a round from its shuffled examples (eagerly or traced).

    Both round-data paths (`RoundInputs` and
    `keras_luar.training.indexed_data.IndexedPopulation`) end with this, so
    they make the same batches: the shuffle repeated as needed, the seeded
    augmentation of each example (seeded by the shuffle seed, the example's
    position in the round and the run seed), then τ batches of B.
    """
    ds = shuffled.repeat()
    if augmentation is not None:

        def augmented(index, element):
            example_seed = tf.random.experimental.stateless_fold_in(
                tf.stack([tf.cast(shuffle_seed, tf.int64), index]), run_seed
            )
            x, *rest = element
            return (augmentation(x, example_seed), *rest)

        ds = ds.take(local_steps * batch_size).enumerate().map(augmented)
    return ds.batch(batch_size).take(local_steps)


class RoundInputs:
    """Makes a round's dataset for each sampled client (see the module docstring).

    Args:
      clients: The checked `Clients`.
      local_steps: τ, batches per client per round.
      batch_size: B, for unbatched data.
      seed: The run seed.
      augmentation: Optional ``fn(x, seed) -> x`` for unbatched data.
      indexed: Draw the rounds' datasets inside TensorFlow from the population
        held as one tensor per component
        (`keras_luar.training.indexed_data.IndexedPopulation`; the same batches,
        with no Python per client). The clients must be tensor slices (see
        `keras_luar.training.indexed_data.unindexable`).
    """

    def __init__(
        self,
        clients: Clients,
        *,
        local_steps: int,
        batch_size: int,
        seed: int,
        augmentation: Callable | None = None,
        indexed: bool = False,
    ):
        self.clients = clients
        self.local_steps = local_steps
        self.batch_size = batch_size
        self.seed = seed
        self.augmentation = augmentation
        # Each client's dataset with `round_dataset_options`, made when first sampled
        # (3,400 of them took 0.5 s up front); the options hold for its later pipelines.
        self._sources: dict[str, tf.data.Dataset] = {}
        # Pre-batched data: batches each client has used so far (saved in checkpoints).
        self.cursors: dict[str, int] = {}
        self.indexed = None
        if indexed:
            from keras_luar.training.indexed_data import IndexedPopulation

            self.indexed = IndexedPopulation(self)

    def round_data(self, chosen: Sequence[int], round_num: int, *, sized: bool) -> list:
        """The inputs of a round's chosen clients, in order (the cursors do not move).

        Args:
          chosen: The sampled clients' indices.
          round_num: The round.
          sized: Pack each client's data set size along (``"example"``
            weighting; see `keras_luar.algorithms.weighting`).

        Returns:
          One dataset, or `SizedClientData`, per chosen client.
        """
        if self.indexed is not None:
            return self.indexed.round_data(chosen, round_num, sized=sized)
        data = [self.dataset(int(i), round_num) for i in chosen]
        if sized:
            from keras_luar.algorithms.weighting import sized_client_data

            sizes, ids = self.clients.sizes, self.clients.ids
            data = [
                sized_client_data(d, sizes[ids[int(i)]]) for d, i in zip(data, chosen, strict=True)
            ]
        return data

    def dataset(self, client_index: int, round_num: int) -> tf.data.Dataset:
        """The round's dataset of the client at `client_index` (the cursor does not move)."""
        if self.indexed is not None:
            return self.indexed.dataset(client_index, round_num)
        cid = self.clients.ids[client_index]
        with global_seed(self.seed):
            if self.clients.batched:
                return self._batched(cid, client_index)
            return self._unbatched(cid, client_index, round_num)

    def advance(self, client_indices: Sequence[int]) -> None:
        """Moves the cursors of the clients that trained this round (pre-batched data)."""
        if self.clients.batched:
            for i in client_indices:
                cid = self.clients.ids[int(i)]
                self.cursors[cid] = self.cursors.get(cid, 0) + self.local_steps

    def _source(self, cid: str) -> tf.data.Dataset:
        source = self._sources.get(cid)
        if source is None:
            source = self._sources[cid] = self.clients.datasets[cid].with_options(
                round_dataset_options()
            )
        return source

    def _unbatched(self, cid: str, client_index: int, round_num: int) -> tf.data.Dataset:
        seed = tf.constant(_shuffle_seed(round_num, client_index), tf.int64)
        shuffled = self._source(cid).shuffle(max(self.clients.counts[cid], 1), seed=seed)
        return round_batches(
            shuffled, seed, run_seed=self.seed, local_steps=self.local_steps,
            batch_size=self.batch_size, augmentation=self.augmentation,
        )  # fmt: skip

    def _batched(self, cid: str, client_index: int) -> tf.data.Dataset:
        num_batches = self.clients.counts[cid]
        start = self.cursors.get(cid, 0)
        first, last = start // num_batches, (start + self.local_steps - 1) // num_batches
        passes = [
            self._source(cid).shuffle(
                num_batches,
                seed=(client_index * 1_000_003 + p) % (2**31 - 1),
                reshuffle_each_iteration=False,
            )
            for p in range(first, last + 1)
        ]
        ds = passes[0]
        for more in passes[1:]:
            ds = ds.concatenate(more)
        return ds.skip(start - first * num_batches).take(self.local_steps)


CACHE_MODES = ("auto", "memory", "files", "tensors")


def resolve_cache_mode(clients: Clients, mode: str, *, in_process: bool, pooled: bool) -> str:
    """The way client data reaches the rounds: ``"memory"``, ``"files"`` or ``"tensors"``.

    ``"auto"`` is ``"tensors"`` in process when the clients are tensor slices
    that fit (see `keras_luar.training.indexed_data`), else ``"files"`` when
    some client may hold more than 1 MB and the rounds do not run in process
    (TFF's C++ runtime serializes every dataset it is given, data included, on
    every call, while a dataset that reads a file serializes to a small graph
    naming the file), else ``"memory"``.

    Args:
      clients: The checked clients.
      mode: One of `CACHE_MODES`.
      in_process: Whether rounds run in this process's TensorFlow runtime.
      pooled: Whether client work is sent to TFF workers.

    Returns:
      The resolved mode.

    Raises:
      ValueError: For ``"tensors"`` when the rounds or the clients cannot have it.
    """
    from keras_luar.training.indexed_data import unindexable

    if mode in ("auto", "tensors"):
        if not in_process:
            why = "the rounds run on TFF's runtime (backend='tff')"
        elif pooled:
            why = "client work is sent to TFF workers, which need datasets they can deserialize"
        else:
            why = unindexable(clients)
        if why is None:
            return "tensors"
        if mode == "tensors":
            raise ValueError(
                "Invalid value for argument `client_data_cache`. Expected 'tensors' only for "
                "in-memory clients (arrays, (x, y, partitions), FederatedData or untransformed "
                "Dataset.from_tensor_slices datasets) with backend='tensorflow' and no workers. "
                f"Received: client_data_cache='tensors', but {why}"
            )
        return "files" if not in_process and _may_exceed(clients, 2**20) else "memory"
    return mode


def cache_clients(clients: Clients, *, directory: str) -> Clients:
    """`clients` with datasets that read TFRecord files written to `directory` (mode ``"files"``).

    Args:
      clients: The checked clients.
      directory: An existing directory for the files.

    Returns:
      A copy of `clients` whose datasets read the files (same elements, same order).
    """
    from keras_luar.data.records import read_client_records, write_client_records

    stacked = not clients.batched
    paths, _ = write_client_records(clients.datasets, directory, stacked=stacked)
    spec = clients.element_spec
    datasets = {cid: read_client_records(paths[cid], spec, stacked=stacked) for cid in clients.ids}
    return dataclasses.replace(clients, datasets=datasets)


def _may_exceed(clients: Clients, limit: int) -> bool:
    """Whether some client's data may be larger than `limit` bytes (unknown counts as yes)."""
    specs = tf.nest.flatten(clients.element_spec)
    if clients.batched or not all(s.shape.is_fully_defined() for s in specs):
        return True
    element = sum(s.shape.num_elements() * s.dtype.size for s in specs)
    return any(n * element > limit for n in clients.counts.values())
