"""Tests for the FEMNIST and Shakespeare loaders on tiny SQLite files in TFF's format.

The fixtures are written the way TFF's simulation data sets are stored: an
SQLite file with the ``examples`` and ``client_metadata`` tables of
`sql_client_data`, rows of serialized ``tf.train.Example`` protos with the
real feature names and dtypes, and split names as in the real files. TFF's own
writer (`sql_client_data_utils.save_to_sql_client_data`) puts each client in
one split only, while the real files hold every client in both a train and a
test split, so the tables are filled with sqlite3 directly.
"""

from __future__ import annotations

import socket
import sqlite3
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.shakespeare import (
    char_prediction_preprocessing as tff_char,
)
from tensorflow_federated.python.simulation.datasets import download as tff_download

from keras_luar.data import (
    FederatedData,
    load_femnist_federated,
    load_shakespeare_federated,
)
from keras_luar.data import femnist as femnist_module
from keras_luar.data import shakespeare as shakespeare_module
from keras_luar.data.cache import MissingDataError
from keras_luar.data.shakespeare import CHAR_VOCAB, VOCAB_SIZE, encode_snippet

FEMNIST_FILE = "emnist_all.sqlite"
SHAKESPEARE_FILE = "shakespeare.sqlite"
FEMNIST_URL = "https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma"
SHAKESPEARE_URL = "https://storage.googleapis.com/tff-datasets-public/shakespeare.sqlite.lzma"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test instead of reaching out."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --------------------------------------------------------------------------- fixtures


def write_tff_sqlite(path, splits):
    """Writes ``{split_name: {client_id: [serialized Example]}}`` with TFF's schema."""
    with sqlite3.connect(path) as con:
        con.execute(
            "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
            "serialized_example_proto BLOB NOT NULL);"
        )
        con.execute(
            "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
            "num_examples INTEGER NOT NULL);"
        )
        for split, clients in splits.items():
            for cid, protos in clients.items():
                con.executemany(
                    "INSERT INTO examples (split_name, client_id, serialized_example_proto) "
                    "VALUES (?, ?, ?);",
                    [(split, cid, p) for p in protos],
                )
                con.execute(
                    "INSERT INTO client_metadata (client_id, split_name, num_examples) "
                    "VALUES (?, ?, ?);",
                    (cid, split, len(protos)),
                )
    con.close()


def emnist_example(pixels, label):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "pixels": tf.train.Feature(
                    float_list=tf.train.FloatList(value=pixels.reshape(-1).tolist())
                ),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
        )
    ).SerializeToString()


def snippet_example(text: bytes):
    return tf.train.Example(
        features=tf.train.Features(
            feature={"snippets": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text]))}
        )
    ).SerializeToString()


WRITERS = ["f0000_14", "f0001_41", "f0002_03", "f0003_27", "f0004_10"]
DIGIT_WRITERS = ["f0100_22", "f0101_35", "f0102_08"]


def fake_writer(rng, n, num_classes):
    # White background (1.0) with a dark stroke, like TFF's EMNIST pixels.
    pixels = np.ones((n, 28, 28), np.float32)
    pixels[:, 8:20, 12:16] = rng.uniform(0.0, 0.3, size=(n, 12, 4)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=n)
    return pixels, labels


@pytest.fixture(scope="module")
def femnist_dir(tmp_path_factory):
    """A cache directory holding a 5-writer ``emnist_all.sqlite`` and its raw arrays."""
    rng = np.random.default_rng(42)
    raw = {}
    for split, writers, num_classes in [
        ("all_train", WRITERS, 62),
        ("all_test", WRITERS, 62),
        ("digits_only_train", DIGIT_WRITERS, 10),
        ("digits_only_test", DIGIT_WRITERS, 10),
    ]:
        raw[split] = {w: fake_writer(rng, int(rng.integers(2, 5)), num_classes) for w in writers}
    directory = tmp_path_factory.mktemp("femnist")
    write_tff_sqlite(
        directory / FEMNIST_FILE,
        {
            split: {
                w: [emnist_example(p, y) for p, y in zip(*arrays, strict=True)]
                for w, arrays in writers.items()
            }
            for split, writers in raw.items()
        },
    )
    return directory, raw


SNIPPETS = {
    "train": {
        "ALLS_WELL_THAT_ENDS_WELL_HELENA": [b"pt x\xc3\xa9", b"d"],
        "HAMLET_HORATIO": [b"Good my lord.", b"Ay, my good lord.\nWhat say you?"],
        "KING_LEAR_FOOL": [b"Have more than thou showest, speak less than thou knowest."],
        "MACBETH_PORTER": [b"Anon!"],
    },
    "test": {
        "ALLS_WELL_THAT_ENDS_WELL_HELENA": [b"dh"],
        "HAMLET_HORATIO": [b"Hail to your lordship!"],
        "KING_LEAR_FOOL": [b"Nuncle!", b"All thy other titles thou hast given away."],
        "MACBETH_PORTER": [b"Knock, knock!"],
    },
}


@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shakespeare")
    write_tff_sqlite(
        directory / SHAKESPEARE_FILE,
        {
            split: {role: [snippet_example(s) for s in snips] for role, snips in roles.items()}
            for split, roles in SNIPPETS.items()
        },
    )
    return directory


def tff_reference_encoding(snippets, sequence_length):
    """TFF baseline's tokenizer, cut into (x, y) pairs as its pipeline does."""
    tokenize = tff_char._build_tokenize_fn(split_length=sequence_length + 1)
    xs, ys = [], []
    for s in snippets:
        tokens = tokenize({"snippets": tf.constant(s)}).numpy()
        pieces = tokens.reshape(-1, sequence_length + 1)
        xs.append(pieces[:, :-1])
        ys.append(pieces[:, 1:])
    return np.concatenate(xs).astype(np.int32), np.concatenate(ys).astype(np.int32)


def assert_datasets_match_arrays(data: FederatedData):
    for cid, ds in data.client_data.items():
        x, y = data.client_arrays[cid]
        got = list(ds.batch(1000).as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate([b[0] for b in got]), x)
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)


# --------------------------------------------------------------------------- FEMNIST


def test_femnist_clients_are_writers_with_their_examples(femnist_dir):
    directory, raw = femnist_dir
    data = load_femnist_federated(3, seed=0, data_dir=directory, download=False)

    assert isinstance(data, FederatedData)
    assert len(data.client_ids) == 3
    assert data.client_ids == sorted(data.client_ids)
    assert set(data.client_ids) <= set(WRITERS)
    assert data.num_classes == 62 and data.input_shape == (28, 28, 1)
    for writer in data.client_ids:
        x, y = data.client_arrays[writer]
        pixels, labels = raw["all_train"][writer]
        assert x.dtype == np.float32 and x.shape == (len(labels), 28, 28, 1)
        assert y.dtype == np.int32
        # Values pass through unchanged: background stays 1.0, no inversion.
        np.testing.assert_array_equal(x[..., 0], pixels)
        np.testing.assert_array_equal(y, labels)
    x_test, y_test = data.test_data
    np.testing.assert_array_equal(
        x_test[..., 0], np.concatenate([raw["all_test"][w][0] for w in data.client_ids])
    )
    np.testing.assert_array_equal(
        y_test, np.concatenate([raw["all_test"][w][1] for w in data.client_ids])
    )
    assert x_test.dtype == np.float32 and y_test.dtype == np.int32
    assert_datasets_match_arrays(data)
    spec = next(iter(data.client_data.values())).element_spec
    assert spec[0].shape.as_list() == [28, 28, 1] and spec[1].dtype == tf.int32


def test_femnist_seed_fixes_the_writers(femnist_dir):
    directory, _ = femnist_dir
    picks = {
        seed: load_femnist_federated(3, seed=seed, data_dir=directory, download=False).client_ids
        for seed in range(4)
    }
    again = load_femnist_federated(3, seed=2, data_dir=directory, download=False).client_ids
    assert again == picks[2]
    assert len({tuple(p) for p in picks.values()}) > 1
    everyone = load_femnist_federated(5, seed=7, data_dir=directory, download=False)
    assert everyone.client_ids == WRITERS


def test_femnist_writers_per_client_are_overlapping_windows(femnist_dir):
    directory, raw = femnist_dir
    writers = load_femnist_federated(4, seed=1, data_dir=directory, download=False).client_ids
    data = load_femnist_federated(
        4, seed=1, data_dir=directory, download=False, writers_per_client=2
    )

    assert data.client_ids == ["client_000", "client_001", "client_002", "client_003"]
    windows = [
        [writers[0], writers[1]],
        [writers[1], writers[2]],
        [writers[2], writers[3]],
        [writers[3], writers[0]],
    ]
    for cid, window in zip(data.client_ids, windows, strict=True):
        x, y = data.client_arrays[cid]
        np.testing.assert_array_equal(
            x[..., 0], np.concatenate([raw["all_train"][w][0] for w in window])
        )
        np.testing.assert_array_equal(y, np.concatenate([raw["all_train"][w][1] for w in window]))
    # The test split still holds each drawn writer once.
    assert len(data.test_data[1]) == sum(len(raw["all_test"][w][1]) for w in writers)
    assert_datasets_match_arrays(data)


def test_femnist_only_digits_reads_the_digit_splits(femnist_dir):
    directory, raw = femnist_dir
    data = load_femnist_federated(3, data_dir=directory, download=False, only_digits=True)
    assert data.client_ids == DIGIT_WRITERS
    assert data.num_classes == 10
    for w in DIGIT_WRITERS:
        np.testing.assert_array_equal(data.client_arrays[w][1], raw["digits_only_train"][w][1])


def test_femnist_more_clients_than_writers(femnist_dir):
    directory, _ = femnist_dir
    with pytest.raises(ValueError, match=r"`num_clients`.*5 writers.*num_clients=6"):
        load_femnist_federated(6, data_dir=directory, download=False)


def test_femnist_reads_the_environment_cache(femnist_dir, monkeypatch):
    directory, _ = femnist_dir
    monkeypatch.setenv("KERAS_LUAR_DATA", str(directory))
    assert len(load_femnist_federated(2, download=False).client_ids) == 2


# --------------------------------------------------------------------------- Shakespeare


def test_vocabulary_is_tff_baselines():
    assert list(CHAR_VOCAB) == tff_char.CHAR_VOCAB
    assert (
        shakespeare_module.PAD_ID,
        shakespeare_module.OOV_ID,
        shakespeare_module.BOS_ID,
        shakespeare_module.EOS_ID,
    ) == tff_char.get_special_tokens()
    assert VOCAB_SIZE == 90


def test_encode_snippet_by_hand():
    # p=4, t=5, space=14, x=6; the two UTF-8 bytes of "é" are out of vocabulary (87);
    # bos=88, eos=89, pad=0.
    x, y = encode_snippet(b"pt x\xc3\xa9", sequence_length=3)
    assert x.tolist() == [[88, 4, 5], [6, 87, 87]]
    assert y.tolist() == [[4, 5, 14], [87, 87, 89]]
    x, y = encode_snippet("d", sequence_length=3)
    assert x.tolist() == [[88, 1, 89]] and y.tolist() == [[1, 89, 0]]
    assert x.dtype == np.int32 and y.dtype == np.int32


@pytest.mark.parametrize("sequence_length", [1, 5, 80])
def test_encode_snippet_matches_tff_tokenizer(sequence_length):
    snippets = [s for roles in SNIPPETS.values() for snips in roles.values() for s in snips]
    x, y = tff_reference_encoding(snippets, sequence_length)
    pairs = [encode_snippet(s, sequence_length) for s in snippets]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pairs]), x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pairs]), y)


def test_shakespeare_clients_are_roles(shakespeare_dir):
    data = load_shakespeare_federated(data_dir=shakespeare_dir, download=False, sequence_length=5)

    roles = sorted(SNIPPETS["train"])
    assert data.client_ids == roles
    assert data.num_classes == VOCAB_SIZE and data.input_shape == (5,)
    for role in roles:
        x, y = data.client_arrays[role]
        ref_x, ref_y = tff_reference_encoding(SNIPPETS["train"][role], 5)
        assert x.dtype == np.int32 and y.dtype == np.int32 and x.shape[1:] == (5,)
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(y, ref_y)
    # Next character: y is x shifted by one within each piece.
    x, y = data.client_arrays["KING_LEAR_FOOL"]
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    ref_test = tff_reference_encoding([s for r in roles for s in SNIPPETS["test"][r]], 5)
    np.testing.assert_array_equal(data.test_data[0], ref_test[0])
    np.testing.assert_array_equal(data.test_data[1], ref_test[1])
    assert_datasets_match_arrays(data)


def test_shakespeare_hand_encoded_client(shakespeare_dir):
    data = load_shakespeare_federated(data_dir=shakespeare_dir, download=False, sequence_length=3)
    x, y = data.client_arrays["ALLS_WELL_THAT_ENDS_WELL_HELENA"]
    assert x.tolist() == [[88, 4, 5], [6, 87, 87], [88, 1, 89]]
    assert y.tolist() == [[4, 5, 14], [87, 87, 89], [1, 89, 0]]


def test_shakespeare_seed_and_min_size(shakespeare_dir):
    kwargs = dict(data_dir=shakespeare_dir, download=False, sequence_length=5)
    first = load_shakespeare_federated(2, seed=3, **kwargs).client_ids
    assert load_shakespeare_federated(2, seed=3, **kwargs).client_ids == first
    assert len(first) == 2 and set(first) <= set(SNIPPETS["train"])
    picks = {tuple(load_shakespeare_federated(2, seed=s, **kwargs).client_ids) for s in range(5)}
    assert len(picks) > 1

    # With L=5: HELENA 2+1, HORATIO 3+6, FOOL 10, PORTER 2 sequences.
    counts = {r: len(tff_reference_encoding(s, 5)[0]) for r, s in SNIPPETS["train"].items()}
    assert counts == {
        "ALLS_WELL_THAT_ENDS_WELL_HELENA": 3,
        "HAMLET_HORATIO": 9,
        "KING_LEAR_FOOL": 10,
        "MACBETH_PORTER": 2,
    }
    kept = load_shakespeare_federated(min_size=4, **kwargs)
    assert kept.client_ids == ["HAMLET_HORATIO", "KING_LEAR_FOOL"]
    with pytest.raises(ValueError, match=r"`num_clients`.*2 roles.*num_clients=3"):
        load_shakespeare_federated(3, min_size=4, **kwargs)


# --------------------------------------------------------------------------- offline


@pytest.fixture
def download_calls(monkeypatch):
    """Replaces TFF's downloader with one that records its calls and fails."""
    calls = []

    def fail(origin, cache_dir=None):
        calls.append((origin, cache_dir))
        raise OSError("no route to host (test)")

    monkeypatch.setattr(tff_download, "get_compressed_file", fail)
    return calls


LOADERS = [
    (load_femnist_federated, "FEMNIST", FEMNIST_FILE, FEMNIST_URL),
    (load_shakespeare_federated, "Shakespeare", SHAKESPEARE_FILE, SHAKESPEARE_URL),
]


@pytest.mark.parametrize("load, name, filename, url", LOADERS)
def test_missing_without_download(tmp_path, download_calls, load, name, filename, url):
    with pytest.raises(MissingDataError) as info:
        load(data_dir=tmp_path, download=False)
    message = str(info.value)
    assert message.startswith(f"{name} is not in the data cache")
    assert "(download=False)" in message
    assert str(tmp_path / filename) in message and url in message
    assert download_calls == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("load, name, filename, url", LOADERS)
def test_failed_download_names_the_reason(tmp_path, download_calls, load, name, filename, url):
    with pytest.raises(MissingDataError) as info:
        load(data_dir=tmp_path, download=True)
    message = str(info.value)
    assert f"downloading {url} failed: OSError: no route to host (test)" in message
    assert str(tmp_path / filename) in message and url in message
    assert [origin for origin, _ in download_calls] == [url]
    # Nothing is left behind: the scratch directory is removed.
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    def half_written(origin, filename):
        with open(filename, "wb") as f:
            f.write(b"SQLite format 3\x00 truncated")
        raise TimeoutError("timed out")

    monkeypatch.setattr(tff_download, "_fetch_lzma_file", half_written)
    with pytest.raises(MissingDataError, match="TimeoutError: timed out"):
        load_femnist_federated(2, data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_lands_in_the_cache(tmp_path, monkeypatch, shakespeare_dir):
    fixture_bytes = (shakespeare_dir / SHAKESPEARE_FILE).read_bytes()
    seen = []

    def fetch(origin, filename):
        seen.append((origin, socket.getdefaulttimeout()))
        with open(filename, "wb") as f:
            f.write(fixture_bytes)

    monkeypatch.setattr(tff_download, "_fetch_lzma_file", fetch)
    before = socket.getdefaulttimeout()
    data = load_shakespeare_federated(data_dir=tmp_path, sequence_length=5)
    assert seen == [(SHAKESPEARE_URL, femnist_module.DOWNLOAD_TIMEOUT_S)]
    assert socket.getdefaulttimeout() == before
    assert [p.name for p in tmp_path.iterdir()] == [SHAKESPEARE_FILE]
    assert data.client_ids == sorted(SNIPPETS["train"])


def test_damaged_cache_file(tmp_path):
    (tmp_path / FEMNIST_FILE).write_bytes(b"not a database at all" * 100)
    with pytest.raises(MissingDataError, match="is there but is not TFF's SQLite database"):
        load_femnist_federated(2, data_dir=tmp_path, download=False)


# --------------------------------------------------------------------------- arguments


@pytest.fixture
def no_file_access(monkeypatch):
    def touched(*args, **kwargs):
        raise AssertionError("a file was looked up before the arguments were checked")

    monkeypatch.setattr(femnist_module, "_tff_database", touched)
    monkeypatch.setattr(shakespeare_module, "_tff_database", touched)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_clients=0), ValueError, r"`num_clients`.*num_clients=0"),
        (dict(num_clients=True), ValueError, r"`num_clients`"),
        (dict(num_clients=2.0), ValueError, r"`num_clients`"),
        (dict(seed=-1), ValueError, r"`seed`.*seed=-1"),
        (dict(writers_per_client=0), ValueError, r"`writers_per_client`"),
        (dict(num_clients=3, writers_per_client=4), ValueError, r"at most num_clients \(3\)"),
        (dict(only_digits=1), ValueError, r"`only_digits`.*True or False"),
        (dict(download="no"), ValueError, r"`download`"),
        (dict(data_dir=3), TypeError, r"`data_dir`"),
    ],
)
def test_femnist_bad_arguments(no_file_access, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_femnist_federated(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_clients=0), ValueError, r"`num_clients`"),
        (dict(num_clients="all"), ValueError, r"`num_clients`"),
        (dict(sequence_length=0), ValueError, r"`sequence_length`.*sequence_length=0"),
        (dict(min_size=0), ValueError, r"`min_size`"),
        (dict(seed=1.5), ValueError, r"`seed`"),
        (dict(download=None), ValueError, r"`download`"),
        (dict(data_dir=1.0), TypeError, r"`data_dir`"),
    ],
)
def test_shakespeare_bad_arguments(no_file_access, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_shakespeare_federated(**kwargs)
