"""AG News loader: CSV reading, word vocabulary, encoding, split and offline errors.

Every test reads tiny CSV files written here in the original format; the
network is blocked for the whole module.
"""

from __future__ import annotations

import collections
import csv
import re
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from keras_luar.data import agnews
from keras_luar.data.agnews import (
    build_vocabulary,
    encode,
    load_agnews_federated,
    load_agnews_vocabulary,
    read_agnews_csv,
)
from keras_luar.data.cache import MissingDataError
from keras_luar.data.partition import partition_dirichlet

# The first training row, with an embedded comma, doubled quotes and an
# escaped line break ("rose\nin" must give "rose", "in", not "nin").
KNOWN_TITLE = 'Stocks rally, "again"'
KNOWN_DESCRIPTION = "Markets rose\\nin Tokyo, traders said."
KNOWN_TOKENS = ["stocks", "rally", "again", "markets", "rose", "in", "tokyo", "traders", "said"]
WORDS = {
    1: ["world", "leaders", "summit", "peace", "talks"],
    2: ["team", "wins", "game", "season", "coach"],
    3: ["stocks", "markets", "profit", "shares", "oil"],
    4: ["software", "space", "internet", "chip", "research"],
}
TEST_ONLY_WORD = "zanzibar"


def _train_rows():
    rows = [("3", KNOWN_TITLE, KNOWN_DESCRIPTION)]
    for i in range(1, 40):
        label = i % 4 + 1
        words = WORDS[label]
        # "row<i>" makes every encoded row unique, so rows can be matched 1:1.
        title = f"{words[i % 5].title()} row{i}, {words[(i + 1) % 5]}"
        description = f'"{words[(i + 2) % 5]}" in {words[(i + 3) % 5]}\\nsaid (AP) {i % 7}'
        rows.append((str(label), title, description))
    return rows


def _test_rows():
    return [
        ("1", "World talks", f"Leaders meet in {TEST_ONLY_WORD.title()}, officials said."),
        ("2", 'Coach "wins"', "The team\\nwins again."),
        ("3", "Oil, shares", "Profit up."),
        ("4", "Space chip", "Internet research said."),
        ("4", "Software", "New chip."),
    ]


def _write_csv(path, rows):
    # The original files quote every field and double embedded quotes.
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def data_dir(tmp_path):
    directory = tmp_path / "ag_news_csv"
    directory.mkdir()
    _write_csv(directory / "train.csv", _train_rows())
    _write_csv(directory / "test.csv", _test_rows())
    return tmp_path


def _reference_tokens(text):
    # Independent of agnews.tokenize: undo the escape, lower-case, split on
    # anything but ASCII letters and digits (the fixture is ASCII).
    return re.findall(r"[a-z0-9]+", text.replace("\\n", "\n").lower())


def _reference_encode(rows, vocabulary, length):
    ids = {token: i for i, token in enumerate(vocabulary)}
    out = np.zeros([len(rows), length], np.int32)
    for r, (_, title, description) in enumerate(rows):
        tokens = _reference_tokens(f"{title} {description}")[:length]
        out[r, : len(tokens)] = [ids.get(t, 1) for t in tokens]
    return out


def _reference_vocabulary(rows, size):
    counts = collections.Counter(
        t for _, title, description in rows for t in _reference_tokens(f"{title} {description}")
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ["", "[UNK]"] + [t for t, _ in ranked[: size - 2]]


def test_read_csv_keeps_quotes_commas_and_labels(data_dir):
    texts, labels = read_agnews_csv(data_dir / "ag_news_csv" / "train.csv")
    rows = _train_rows()
    assert texts == [f"{title} {description}" for _, title, description in rows]
    assert texts[0] == 'Stocks rally, "again" Markets rose\\nin Tokyo, traders said.'
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [int(label) - 1 for label, _, _ in rows])


def test_vocabulary_by_hand():
    # Counts: a 3, b 2, c 1; ties (y and z, 2 each) go alphabetically.
    assert build_vocabulary(["b a c", "a b", "A."], 4) == ["", "[UNK]", "a", "b"]
    assert build_vocabulary(["b a c", "a b", "A."], 10) == ["", "[UNK]", "a", "b", "c"]
    assert build_vocabulary(["z y", "y z x"], 5) == ["", "[UNK]", "y", "z", "x"]
    assert build_vocabulary(["y z x", "z y"], 5) == ["", "[UNK]", "y", "z", "x"]


def test_encode_by_hand():
    vocabulary = ["", "[UNK]", "a", "b", "c"]
    np.testing.assert_array_equal(
        encode(["C, b\\nA d", "a a a a a a", ""], vocabulary, 5),
        [[4, 3, 2, 1, 0], [2, 2, 2, 2, 2], [0, 0, 0, 0, 0]],
    )


def test_loader_shapes_dtypes_and_labels(data_dir):
    data = load_agnews_federated(
        3, alpha=0.5, seed=0, data_dir=data_dir, download=False, sequence_length=16, min_size=2
    )
    assert data.client_ids == ["client_000", "client_001", "client_002"]
    assert data.num_classes == 4
    assert data.input_shape == (16,)
    for x, y in data.client_arrays.values():
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.shape == (len(y), 16)
        assert set(y.tolist()) <= {0, 1, 2, 3}
    x_test, y_test = data.test_data
    assert x_test.dtype == np.int32 and x_test.shape == (5, 16)
    np.testing.assert_array_equal(y_test, [0, 1, 2, 3, 3])
    spec = data.client_data["client_000"].element_spec
    assert spec[0] == tf.TensorSpec([16], tf.int32)
    assert spec[1] == tf.TensorSpec([], tf.int32)


def test_clients_hold_the_dirichlet_split_of_every_training_row(data_dir):
    length = 32
    data = load_agnews_federated(
        3, alpha=0.5, seed=4, data_dir=data_dir, download=False, sequence_length=length, min_size=2
    )
    rows = _train_rows()
    vocabulary = _reference_vocabulary(rows, 20000)
    x_all = _reference_encode(rows, vocabulary, length)
    y_all = np.array([int(r[0]) - 1 for r in rows], np.int32)
    assert len({tuple(row) for row in x_all}) == len(rows)  # rows are distinguishable
    parts = partition_dirichlet(x_all, y_all, 3, 0.5, min_size=2, seed=4)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(rows)))
    for (x, y), idx in zip(data.client_arrays.values(), parts, strict=True):
        np.testing.assert_array_equal(x, x_all[idx])
        np.testing.assert_array_equal(y, y_all[idx])
    x_ds = np.stack([x for x, _ in data.client_data["client_001"].as_numpy_iterator()])
    np.testing.assert_array_equal(x_ds, x_all[parts[1]])


def test_known_sentence_ids_padding_and_truncation(data_dir):
    vocabulary = load_agnews_vocabulary(data_dir=data_dir, download=False)
    assert vocabulary[:2] == ["", "[UNK]"]
    assert vocabulary == _reference_vocabulary(_train_rows(), 20000)
    ids = [vocabulary.index(t) for t in KNOWN_TOKENS]
    assert all(i >= 2 for i in ids)
    for length, expected in [(12, ids + [0, 0, 0]), (5, ids[:5])]:
        data = load_agnews_federated(
            1, data_dir=data_dir, download=False, sequence_length=length, min_size=1
        )
        ((x, _),) = data.client_arrays.values()
        # A single client holds every row in file order.
        assert x[0].tolist() == expected


def test_small_vocabulary_sends_rare_words_to_oov(data_dir):
    vocabulary = load_agnews_vocabulary(data_dir=data_dir, download=False, vocabulary_size=6)
    assert vocabulary == _reference_vocabulary(_train_rows(), 6)
    assert len(vocabulary) == 6
    data = load_agnews_federated(
        1, data_dir=data_dir, download=False, sequence_length=9, vocabulary_size=6, min_size=1
    )
    ids = {t: i for i, t in enumerate(vocabulary)}
    expected = [ids.get(t, 1) for t in KNOWN_TOKENS]
    assert 1 in expected  # the known sentence has rare words
    ((x, _),) = data.client_arrays.values()
    assert x[0].tolist() == expected


def test_vocabulary_comes_from_the_training_split_only(data_dir):
    vocabulary = load_agnews_vocabulary(data_dir=data_dir, download=False)
    assert TEST_ONLY_WORD not in vocabulary
    data = load_agnews_federated(
        2, data_dir=data_dir, download=False, sequence_length=10, min_size=2
    )
    x_test, _ = data.test_data
    np.testing.assert_array_equal(x_test, _reference_encode(_test_rows(), vocabulary, 10))
    # "World talks Leaders meet in Zanzibar, officials said."
    ids = {t: i for i, t in enumerate(vocabulary)}
    assert x_test[0, 5] == 1  # zanzibar
    assert x_test[0, 0] == ids["world"] and x_test[0, 7] == ids["said"]


def test_same_seed_same_split_other_seed_other_split(data_dir):
    def split(seed):
        data = load_agnews_federated(
            3, alpha=0.5, seed=seed, data_dir=data_dir, download=False, min_size=2
        )
        return [y.tolist() for _, y in data.client_arrays.values()]

    assert split(1) == split(1)
    assert split(1) != split(2)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_agnews_federated(data_dir=tmp_path, download=False)
    message = str(err.value)
    assert "download=False" in message
    assert str(tmp_path / "ag_news_csv" / "train.csv") in message
    assert str(tmp_path / "ag_news_csv" / "test.csv") in message
    assert agnews.AGNEWS_URLS["train.csv"] in message
    assert agnews.AGNEWS_URLS["test.csv"] in message
    assert "curl" in message and "KERAS_LUAR_DATA" in message


def test_failed_download_names_the_reason(tmp_path, monkeypatch):
    calls = []

    def fail(url, path):
        calls.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(agnews, "_download", fail)
    with pytest.raises(MissingDataError) as err:
        load_agnews_federated(data_dir=tmp_path)
    assert calls == [agnews.AGNEWS_URLS["train.csv"]]  # gave up at the first failure
    message = str(err.value)
    assert (
        f"downloading {agnews.AGNEWS_URLS['train.csv']} failed: OSError: network is unreachable"
        in message
    )
    assert str(tmp_path / "ag_news_csv" / "test.csv") in message
    assert isinstance(err.value.__cause__, OSError)


def test_download_fetches_only_missing_files(data_dir, monkeypatch):
    test_csv = data_dir / "ag_news_csv" / "test.csv"
    test_csv.unlink()
    calls = []

    def fake_download(url, path):
        calls.append((url, path))
        _write_csv(path, _test_rows())

    monkeypatch.setattr(agnews, "_download", fake_download)
    data = load_agnews_federated(3, data_dir=data_dir, sequence_length=8, min_size=2)
    assert calls == [(agnews.AGNEWS_URLS["test.csv"], test_csv)]
    assert data.test_data[0].shape == (5, 8)


def test_download_writes_through_a_scratch_file(tmp_path, monkeypatch):
    class Response:
        def __init__(self):
            self.chunks = [b'"1","a","b"\n', b""]

        def read(self, size):
            return self.chunks.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    seen = []

    def fake_urlopen(url, timeout):
        seen.append((url, timeout))
        return Response()

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    target = tmp_path / "sub" / "train.csv"
    agnews._download("https://example.invalid/train.csv", target)
    assert seen == [("https://example.invalid/train.csv", agnews.DOWNLOAD_TIMEOUT_S)]
    assert agnews.DOWNLOAD_TIMEOUT_S <= 10
    assert target.read_bytes() == b'"1","a","b"\n'
    assert [p.name for p in target.parent.iterdir()] == ["train.csv"]


def test_damaged_file_is_reported(data_dir):
    (data_dir / "ag_news_csv" / "test.csv").write_text('"5","title","text"\n')
    with pytest.raises(MissingDataError, match="test.csv line 1"):
        load_agnews_federated(3, data_dir=data_dir, download=False, min_size=2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"seed": -1}, "seed"),
        ({"sequence_length": 0}, "sequence_length"),
        ({"vocabulary_size": 1}, "vocabulary_size"),
        ({"min_size": -1}, "min_size"),
        ({"download": "yes"}, "download"),
    ],
)
def test_bad_arguments_raise_before_reading(tmp_path, monkeypatch, kwargs, name):
    def touched(*args, **kwargs):
        raise AssertionError("files were looked up before the arguments were checked")

    monkeypatch.setattr(agnews, "_agnews_files", touched)
    with pytest.raises(ValueError, match=f"Invalid value for argument `{name}`"):
        load_agnews_federated(data_dir=tmp_path, **kwargs)


def test_bad_vocabulary_size_for_vocabulary_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(agnews, "_agnews_files", None)  # calling it would fail
    with pytest.raises(ValueError, match="Invalid value for argument `vocabulary_size`"):
        load_agnews_vocabulary(data_dir=tmp_path, vocabulary_size=2)
