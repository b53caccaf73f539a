"""Client data written to TFRecord files reads back element for element."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_luar.data.records import read_client_records, write_client_records


def _elements(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds]


@pytest.mark.parametrize("stacked", [True, False])
def test_round_trip_preserves_order_values_and_spec(tmp_path, stacked):
    rng = np.random.default_rng(0)
    clients = {
        "a": tf.data.Dataset.from_tensor_slices(
            ({"img": rng.random((5, 3, 2), dtype=np.float32), "id": np.arange(5)}, np.arange(5) % 2)
        ),
        "b": tf.data.Dataset.from_tensor_slices(
            ({"img": rng.random((2, 3, 2), dtype=np.float32), "id": np.arange(2)}, np.arange(2))
        ),
    }
    if not stacked:  # per-element records also hold batches of varying size
        clients = {k: v.batch(2) for k, v in clients.items()}
    paths, counts = write_client_records(clients, str(tmp_path), stacked=stacked)
    assert counts == ({"a": 5, "b": 2} if stacked else {"a": 3, "b": 1})
    for cid, ds in clients.items():
        back = read_client_records(tf.constant(paths[cid]), ds.element_spec, stacked=stacked)
        assert back.element_spec == ds.element_spec
        original, restored = _elements(ds), _elements(back)
        assert len(original) == len(restored)
        for x, y in zip(original, restored, strict=True):
            tf.nest.map_structure(np.testing.assert_array_equal, x, y)


def test_empty_client_has_count_zero_and_reads_empty(tmp_path):
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((0, 2), np.float32), np.zeros(0, np.int32)))
    paths, counts = write_client_records({"e": ds}, str(tmp_path), stacked=True)
    assert counts == {"e": 0}
    assert _elements(read_client_records(paths["e"], ds.element_spec, stacked=True)) == []
