"""Client data in the forms users have it, checked before any round runs.

`FederatedTrainer.fit` accepts per-client data as a list or dict of
`tf.data.Dataset`s, a `tff.simulation.datasets.ClientData`, a
`keras_luar.data.FederatedData`, or arrays with a partition,
``(x, y, partitions)``, where ``partitions`` is a list of index arrays as
returned by `partition_dirichlet` or `partition_iid`. `as_client_datasets`
turns every form into ``{client_id: dataset}`` and `check_client_datasets`
rejects what would fail or silently corrupt training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def _invalid(message: str) -> ValueError:
    return ValueError(f"Invalid value for argument `client_data`. {message}")


def as_client_datasets(client_data: Any) -> dict[str, tf.data.Dataset]:
    """Returns ``{client_id: dataset}`` for any supported client-data form.

    Args:
      client_data: See the module docstring. A client's data in a list or
        dict may also be a pair ``(x, y)`` of arrays, as `model.fit` takes it.

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
    from keras_luar.data.federated import FederatedData

    if isinstance(client_data, FederatedData):
        datasets = dict(client_data.client_data)
    elif isinstance(client_data, Mapping):
        datasets = {str(k): v for k, v in client_data.items()}
    elif isinstance(client_data, tuple) and len(client_data) == 3:
        datasets = _from_partitions(*client_data)
    elif isinstance(client_data, Sequence) and not isinstance(client_data, str | tuple):
        datasets = {str(i): ds for i, ds in enumerate(client_data)}
    elif _is_client_data(client_data):
        datasets = {
            str(cid): client_data.create_tf_dataset_for_client(cid)
            for cid in client_data.client_ids
        }
    else:
        raise TypeError(
            "Invalid value for argument `client_data`. Expected a list or dict of "
            "tf.data.Dataset, a tff.simulation.datasets.ClientData, a FederatedData or "
            f"(x, y, partitions). Received: client_data of type {type(client_data).__name__}"
        )
    if not datasets:
        raise _invalid("Expected at least one client. Received: no clients")
    for cid, ds in list(datasets.items()):
        if _is_array_pair(ds):  # a client given as (x, y) arrays, as model.fit takes them
            datasets[cid] = tf.data.Dataset.from_tensor_slices(tuple(ds))
            continue
        if not isinstance(ds, tf.data.Dataset):
            raise _invalid(
                f"Expected a tf.data.Dataset for every client. Received: client {cid!r} "
                f"holds a {type(ds).__name__}"
            )
    return datasets


def _is_array_pair(obj: Any) -> bool:
    """(x, y) of arrays (x may be a tuple or dict of arrays for several inputs)."""
    if not (isinstance(obj, tuple) and len(obj) == 2):
        return False
    leaves = tf.nest.flatten(obj)
    return bool(leaves) and all(isinstance(v, np.ndarray) or tf.is_tensor(v) for v in leaves)


def _is_client_data(obj: Any) -> bool:
    return hasattr(obj, "client_ids") and hasattr(obj, "create_tf_dataset_for_client")


def _from_partitions(x, y, partitions) -> dict[str, tf.data.Dataset]:
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise _invalid(f"Expected x and y of equal length. Received: {len(x)} and {len(y)}")
    out = {}
    for i, idx in enumerate(partitions):
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(x)):
            raise _invalid(f"Partition {i} holds indices outside [0, {len(x)}).")
        out[str(i)] = tf.data.Dataset.from_tensor_slices((x[idx], y[idx]))
    return out


def _spec_summary(spec) -> str:
    return str(tf.nest.map_structure(lambda s: f"{s.dtype.name}{s.shape.as_list()}", spec))


def check_client_datasets(
    datasets: Mapping[str, tf.data.Dataset],
    *,
    input_rank: int | tuple[int, ...],
    num_outputs: int,
    scan: bool = True,
) -> bool:
    """Checks client datasets against each other and the model.

    Args:
      datasets: ``{client_id: dataset}`` with ``(x, y)`` elements.
      input_rank: Rank of the model's batched input, e.g. 4 for images; for a
        model with several inputs, one rank per input in `tf.nest.flatten`
        order (x is then a matching tuple or dict of tensors).
      num_outputs: Size of the model's last output dimension.
      scan: Also read every element once to check label range and finiteness.

    Returns:
      Whether the datasets are batched.

    Raises:
      ValueError: With the offending client named, for: elements that are not
        ``(x, y)`` pairs, element specs that differ between clients, an empty
        client, integer labels outside ``[0, num_outputs)``, or NaN/Inf in x.
    """
    first_id, first = next(iter(datasets.items()))
    spec = first.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise _invalid(
            f"Expected dataset elements (x, y). Received: client {first_id!r} yields "
            f"{_spec_summary(spec)}"
        )
    for cid, ds in datasets.items():
        if ds.element_spec != spec:
            raise _invalid(
                f"Expected the same element spec for every client. Received: client "
                f"{first_id!r} yields {_spec_summary(spec)} but client {cid!r} yields "
                f"{_spec_summary(ds.element_spec)}"
            )
    ranks = (input_rank,) if isinstance(input_rank, int) else tuple(input_rank)
    x_specs = tf.nest.flatten(spec[0])
    if len(x_specs) != len(ranks):
        raise _invalid(
            f"Expected x to hold {len(ranks)} tensor(s), one per model input. Received: x spec "
            f"{_spec_summary(spec[0])}"
        )
    x_ranks = tuple(s.shape.rank for s in x_specs)
    if x_ranks == ranks:
        batched = True
    elif x_ranks == tuple(r - 1 for r in ranks):
        batched = False
    else:
        expected = " and ".join(f"{r - 1} (unbatched) or {r} (batched)" for r in ranks)
        raise _invalid(
            f"Expected x of rank {expected} to match the model input. Received: x spec "
            f"{_spec_summary(spec[0])}"
        )
    sparse = spec[1].dtype.is_integer
    checker = _scanner(sparse) if scan else None
    for cid, ds in datasets.items():
        if checker is None:
            if ds.cardinality() == 0 or not list(ds.take(1)):
                raise _invalid(
                    f"Expected every client to hold data. Received: client {cid!r} is empty"
                )
            continue
        count, low, high, finite = (v.numpy() for v in checker(ds.with_options(_SCAN_OPTIONS)))
        if count == 0:
            raise _invalid(f"Expected every client to hold data. Received: client {cid!r} is empty")
        if not finite:
            raise _invalid(f"Expected finite inputs. Received: client {cid!r} has NaN or Inf in x")
        if sparse and (low < 0 or high >= max(num_outputs, 2)):
            raise _invalid(
                f"Expected integer labels in [0, {max(num_outputs, 2)}) to match the model's "
                f"{num_outputs} outputs. Received: client {cid!r} has labels in [{low}, {high}]"
            )
    return batched


def client_data_sizes(datasets: Mapping[str, tf.data.Dataset], *, batched: bool) -> dict[str, int]:
    """The number of examples of every client, n_i (the weight of ``"example"`` weighting).

    Args:
      datasets: ``{client_id: dataset}`` with ``(x, y)`` elements.
      batched: Whether the elements are batches (their leading dimension is
        then counted) or single examples.

    Returns:
      ``{client_id: n_i}``. An unbatched dataset of known cardinality is not read.

    Examples:
      >>> import tensorflow as tf
      >>> ds = tf.data.Dataset.from_tensor_slices(([[0.0]] * 5, [0] * 5))
      >>> client_data_sizes({"a": ds, "b": ds.take(3)}, batched=False)
      {'a': 5, 'b': 3}
      >>> client_data_sizes({"a": ds.batch(2)}, batched=True)  # batches of 2, 2 and 1
      {'a': 5}
    """
    sizes = {}
    for cid, ds in datasets.items():
        cardinality = int(ds.cardinality())
        if not batched and cardinality >= 0:
            sizes[cid] = cardinality
            continue
        if batched:
            count = ds.reduce(
                tf.constant(0, tf.int64),
                lambda n, element: (
                    n + tf.shape(tf.nest.flatten(element[1])[0], out_type=tf.int64)[0]
                ),
            )
        else:
            count = ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1)
        sizes[cid] = int(count)
    return sizes


def _scan_options() -> tf.data.Options:
    # One pass over each client: tf.data's autotuning cannot pay off, and its
    # optimization thread logs "Optimization loop failed: CANCELLED" when the pass ends.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return options


_SCAN_OPTIONS = _scan_options()


def _scanner(sparse: bool):
    @tf.function
    def scan(ds):
        def step(acc, element):
            x, y = element
            count, low, high, finite = acc
            y64 = tf.cast(tf.reshape(y, [-1]), tf.int64) if sparse else tf.zeros([1], tf.int64)
            x_finite = tf.reduce_all(
                [
                    tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32)))
                    for t in tf.nest.flatten(x)
                ]
            )
            return (
                count + 1,
                tf.minimum(low, tf.reduce_min(y64)),
                tf.maximum(high, tf.reduce_max(y64)),
                tf.logical_and(finite, x_finite),
            )

        init = (
            tf.constant(0, tf.int64),
            tf.constant(np.iinfo(np.int64).max, tf.int64),
            tf.constant(np.iinfo(np.int64).min, tf.int64),
            tf.constant(True),
        )
        return ds.reduce(init, step)

    return scan
