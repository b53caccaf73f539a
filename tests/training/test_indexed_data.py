"""The in-graph round data path (``client_data_cache="tensors"``) gives the per-client batches.

`keras_luar.training.indexed_data.IndexedPopulation` holds in-memory clients as
one tensor per component and draws each round's datasets inside TensorFlow. Its
batches must be the per-client path's, element for element and in order (so a run
and its History are the same either way), a resumed run must draw what the
uninterrupted one drew, and data it cannot hold must take the per-client path, or
be refused when the user asked for ``"tensors"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_trainer import _client_data, _comparable, _fit, _Interrupt, _model, _trainer, _weights

from keras_luar.training.client_data import RoundInputs, as_clients, resolve_cache_mode
from keras_luar.training.data_checks import check_clients


def _clients(data):
    """Checked `Clients` (counts and sizes set), as `fit` has them before round 0."""
    clients = as_clients(data)
    for cid, ds in clients.datasets.items():
        clients.counts[cid] = clients.sizes[cid] = int(ds.cardinality())
    return clients


def _elements(dataset):
    return [
        np.asarray(t) for element in dataset.as_numpy_iterator() for t in tf.nest.flatten(element)
    ]


def _assert_same_batches(got, want):
    assert got.element_spec == want.element_spec
    got, want = _elements(got), _elements(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def _jitter(x, seed):
    return x + tf.random.stateless_uniform(tf.shape(x), seed, dtype=x.dtype)


@pytest.mark.parametrize("seed", [0, 7])  # 0: the seed pair (0, 0) that shuffle replaces
@pytest.mark.parametrize("augmentation", [None, _jitter], ids=["plain", "augmented"])
def test_indexed_batches_are_the_per_client_batches(seed, augmentation):
    rng = np.random.default_rng(1)
    # Fewer examples than a batch, one batch and a bit, more than τ·B; labels int64.
    sizes = (1, 5, 17, 40)
    data = [(rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 4, n)) for n in sizes]
    clients = _clients(data)
    options = dict(local_steps=3, batch_size=4, seed=seed, augmentation=augmentation)
    per_client = RoundInputs(clients, **options)
    indexed = RoundInputs(clients, **options, indexed=True)
    assert indexed.indexed is not None and per_client.indexed is None
    chosen = [0, 1, 2, 3]
    for round_num in (0, 1, 9):  # round 0, client 0: the op seed 0
        want = per_client.round_data(chosen, round_num, sized=True)
        got = indexed.round_data(chosen, round_num, sized=True)
        for g, w, n in zip(got, want, sizes, strict=True):
            _assert_same_batches(g.batches, w.batches)
            # No private thread pool for its own pipeline; users' data keep the default.
            assert g.batches.options().threading.private_threadpool_size == -1
            assert w.batches.options().threading.private_threadpool_size is None
            assert not g.batches.options().autotune.enabled
            assert not w.batches.options().autotune.enabled
            assert list(g.data_size.as_numpy_iterator()) == [np.float32(n)]
        plain = indexed.round_data([3, 1], round_num, sized=False)  # any choice, in its order
        _assert_same_batches(plain[0], per_client.dataset(3, round_num))
        _assert_same_batches(plain[1], per_client.dataset(1, round_num))
    # Another round, another order.
    assert not np.array_equal(
        _elements(indexed.dataset(3, 1))[0], _elements(indexed.dataset(3, 2))[0]
    )


def test_indexed_batches_of_dict_inputs_keep_their_structure():
    rng = np.random.default_rng(2)
    data = {
        cid: tf.data.Dataset.from_tensor_slices(
            ({"a": rng.normal(size=(n, 2)), "b": rng.integers(0, 9, (n, 3))}, rng.random(n))
        )
        for cid, n in (("x", 6), ("y", 11))
    }
    clients = _clients(data)
    per_client = RoundInputs(clients, local_steps=2, batch_size=5, seed=4)
    indexed = RoundInputs(clients, local_steps=2, batch_size=5, seed=4, indexed=True)
    for i in (0, 1):
        _assert_same_batches(indexed.dataset(i, 3), per_client.dataset(i, 3))


def test_auto_holds_the_population_only_where_it_can():
    x, y, parts = _client_data()
    arrays = _clients((x, y, parts))
    mapped = _clients({cid: ds.map(lambda a, b: (a, b)) for cid, ds in arrays.datasets.items()})
    batched = as_clients({cid: ds.batch(4) for cid, ds in arrays.datasets.items()})
    check_clients(batched, _trainer().signature())
    assert batched.batched

    def mode(clients, wanted="auto", in_process=True, pooled=False):
        return resolve_cache_mode(clients, wanted, in_process=in_process, pooled=pooled)

    assert mode(arrays) == "tensors"
    assert mode(arrays, in_process=False) == "memory"  # TFF's runtime
    assert mode(arrays, pooled=True) == "memory"  # TFF workers
    assert mode(mapped) == "memory"
    assert mode(batched) == "memory"
    assert mode(arrays, "files") == "files"
    refusals = [
        ((arrays,), {"in_process": False}, "backend='tff'"),
        ((arrays,), {"pooled": True}, "TFF workers"),
        ((mapped,), {}, "client '0' is not an untransformed"),
        ((batched,), {}, "batched"),
    ]
    for args, kwargs, reason in refusals:
        with pytest.raises(ValueError, match=f"client_data_cache.*'tensors'.*{reason}"):
            mode(*args, "tensors", **kwargs)


def test_file_backed_or_too_large_populations_keep_the_per_client_path(tmp_path, monkeypatch):
    from keras_luar.training import indexed_data
    from keras_luar.training.client_data import cache_clients

    arrays = _clients(_client_data())
    in_files = cache_clients(arrays, directory=str(tmp_path))  # TFRecord readers
    assert resolve_cache_mode(in_files, "auto", in_process=True, pooled=False) == "memory"
    with pytest.raises(ValueError, match="'tensors'.*client '0' is not an untransformed"):
        resolve_cache_mode(in_files, "tensors", in_process=True, pooled=False)
    nbytes = sum(x.nbytes + y.nbytes for x, y in arrays.arrays.values())
    monkeypatch.setattr(indexed_data, "POPULATION_LIMIT", nbytes - 1)
    assert resolve_cache_mode(arrays, "auto", in_process=True, pooled=False) == "memory"
    with pytest.raises(ValueError, match=f"'tensors'.*holds more than {nbytes - 1} bytes"):
        resolve_cache_mode(arrays, "tensors", in_process=True, pooled=False)
    monkeypatch.setattr(indexed_data, "POPULATION_LIMIT", nbytes)
    assert resolve_cache_mode(arrays, "auto", in_process=True, pooled=False) == "tensors"


def test_a_run_is_the_same_on_both_paths_and_resumes_to_itself(tmp_path):
    # In process, with "example" weighting (each client's size goes along):
    # "memory" builds every client's pipeline in Python each round.
    def run(cache, **kwargs):
        trainer = _trainer(backend="tensorflow", client_weighting="example", **kwargs.pop("t", {}))
        history = _fit(trainer, client_data_cache=cache, **kwargs)
        return _comparable(history), _weights(trainer.model)

    full = run("tensors")
    for cache in ("memory", "auto"):
        got = run(cache)
        assert got[0] == full[0], cache
        for a, b in zip(got[1], full[1], strict=True):
            np.testing.assert_array_equal(a, b)
    directory = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        run("tensors", checkpoint_dir=directory, callbacks=[_Interrupt(at_round=2)])
    # Other initial weights: the checkpoint wins.
    resumed = run("tensors", checkpoint_dir=directory, t={"model": _model(seed=99)})
    assert resumed[0] == full[0]
    for a, b in zip(resumed[1], full[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_tensors_for_data_it_cannot_hold_fails_before_any_round():
    trainer = _trainer(backend="tensorflow")
    before = _weights(trainer.model)
    x, y, parts = _client_data()
    mapped = [
        tf.data.Dataset.from_tensor_slices((x[p], y[p])).map(lambda a, b: (a, b)) for p in parts
    ]
    with pytest.raises(ValueError, match="client_data_cache='tensors'.*client '0'"):
        trainer.fit(mapped, rounds=2, clients_per_round=2, verbose=0, client_data_cache="tensors")
    with pytest.raises(ValueError, match="client_data_cache='tensors'.*backend='tff'"):
        _fit(_trainer(backend="tff"), client_data_cache="tensors")
    for a, b in zip(before, _weights(trainer.model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "bool", "string"])
def test_concatenated_population_equals_numpy_concatenation(dtype):
    from keras_luar.training.indexed_data import concatenated

    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 9, (n, 2, 3)) for n in (4, 0, 1, 7)]
    if dtype == "string":
        parts = [p.astype(str).astype(object) for p in parts]
    else:
        parts = [p.astype(dtype) for p in parts]
    tensors = [tf.constant(p, tf.dtypes.as_dtype(dtype)) for p in parts]
    joined = concatenated(tensors, tf.dtypes.as_dtype(dtype))
    assert joined.dtype == tf.dtypes.as_dtype(dtype) and joined.shape == (12, 2, 3)
    np.testing.assert_array_equal(joined.numpy(), np.concatenate([t.numpy() for t in tensors]))
    del tensors, parts  # the population owns its buffer
    assert int(tf.size(joined)) == 72 and joined.numpy().shape == (12, 2, 3)
