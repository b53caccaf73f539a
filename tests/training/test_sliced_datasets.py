"""Clients given as `from_tensor_slices` datasets are checked and counted from their arrays.

Such a dataset yields exactly the slices of the arrays it was made from, so the
trainer reads them (`keras_luar._tff_internals.tensor_slices`) and checks the
population in one vectorized pass, as it does for arrays, instead of iterating every
dataset. Any other dataset is still read element by element. Both paths must name the
same faults and train alike.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_trainer import _arrays, _comparable, _trainer

from keras_luar.training.client_data import as_clients


def _sliced(x, y):
    return {str(i): tf.data.Dataset.from_tensor_slices((x[i::3], y[i::3])) for i in range(3)}


def _mapped(x, y):
    # The same elements through a transformation: not a tensor-slice dataset any more.
    return {cid: ds.map(lambda a, b: (a, b)) for cid, ds in _sliced(x, y).items()}


FORMS = {"sliced": _sliced, "mapped": _mapped}


def test_tensor_slice_datasets_are_read_as_their_arrays():
    x, y = _arrays(30)
    clients = as_clients(_sliced(x, y))
    assert clients.arrays is not None
    for i, cid in enumerate(clients.ids):
        got_x, got_y = clients.arrays[cid]
        np.testing.assert_array_equal(got_x, x[i::3])
        np.testing.assert_array_equal(got_y, y[i::3])
    # A dict of inputs keeps its keys; a transformed dataset is not read this way.
    inputs = as_clients({"a": tf.data.Dataset.from_tensor_slices(({"pixels": x}, y))})
    assert sorted(inputs.arrays["a"][0]) == ["pixels"]
    assert as_clients(_mapped(x, y)).arrays is None
    assert as_clients({"a": _sliced(x, y)["0"].with_options(tf.data.Options())}).arrays is None


@pytest.mark.parametrize("form", list(FORMS))
def test_both_paths_name_the_same_faults(form):
    x, y = _arrays(30)
    bad_x = x.copy()
    bad_x[5, 2] = np.inf  # example 5 belongs to client 2
    with pytest.raises(ValueError, match="client '2' has NaN or Inf"):
        _trainer().fit(FORMS[form](bad_x, y), rounds=1, clients_per_round=2, verbose=0)
    bad_y = y.copy()
    bad_y[4] = 3  # the model has 3 outputs
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*client '1' has the label 3\b"):
        _trainer().fit(FORMS[form](x, bad_y), rounds=1, clients_per_round=2, verbose=0)
    empty = FORMS[form](x, y)
    empty["1"] = FORMS[form](x[:0], y[:0])["0"]
    with pytest.raises(ValueError, match="client '1' is empty"):
        _trainer().fit(empty, rounds=1, clients_per_round=2, verbose=0)


def test_both_paths_count_alike_and_give_the_same_history():
    x, y = _arrays(60, seed=2)
    histories = {}
    for form, make in FORMS.items():
        trainer = _trainer()
        histories[form] = _comparable(trainer.fit(make(x, y), rounds=2, clients_per_round=2,
                                                  verbose=0))  # fmt: skip
    assert histories["sliced"] == histories["mapped"]
