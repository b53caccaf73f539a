"""Client data on disk, so TFF rounds send file names instead of data sets.

A `tf.data.Dataset` handed to a TFF computation is serialized into the
computation, with its data, on every call. `FederatedTrainer` therefore writes
each client's data once per `fit` to a TFRecord file (one record per element,
each tensor stored with `tf.io.serialize_tensor`), and hands TFF datasets that
read those files: such a dataset serializes to a small graph that names its
file, so a round carries a few kilobytes per client, whatever the data size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow as tf


def _example(element) -> bytes:
    features = {
        f"t{i}": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[tf.io.serialize_tensor(t).numpy()])
        )
        for i, t in enumerate(tf.nest.flatten(element))
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_client_records(
    datasets: Mapping[str, tf.data.Dataset], directory: str, *, stacked: bool
) -> tuple[dict[str, str], dict[str, int]]:
    """Writes every client's data to ``directory/<n>.tfrecord``.

    Args:
      datasets: ``{client_id: dataset}``; all with the same element spec.
      directory: An existing directory to write into.
      stacked: Write a client's elements stacked into one record (fast to read;
        for unbatched data, where all elements have the same shape) instead
        of one record per element (for batches of varying size).

    Returns:
      ``(paths, counts)``: file path and number of elements per client id.
    """
    paths, counts = {}, {}
    for n, (cid, ds) in enumerate(datasets.items()):
        path = os.path.join(directory, f"{n:06d}.tfrecord")
        with tf.io.TFRecordWriter(path) as writer:
            if stacked:
                elements = list(ds)
                count = len(elements)
                if count:
                    columns = [
                        tf.stack(c) for c in zip(*map(tf.nest.flatten, elements), strict=True)
                    ]
                    writer.write(_example(columns))
            else:
                count = 0
                for element in ds:
                    writer.write(_example(element))
                    count += 1
        paths[cid], counts[cid] = path, count
    return paths, counts


def read_client_records(path, element_spec, *, stacked: bool) -> tf.data.Dataset:
    """Opens a file written by `write_client_records` (`path` may be a tensor).

    Args:
      path: The file name, a Python string or a scalar string tensor.
      element_spec: The element spec of the dataset that was written.
      stacked: As given to `write_client_records`.

    Returns:
      A dataset with that element spec, in the order it was written.
    """
    flat_spec = tf.nest.flatten(element_spec)
    features = {f"t{i}": tf.io.FixedLenFeature([], tf.string) for i in range(len(flat_spec))}

    def parse(record):
        parsed = tf.io.parse_single_example(record, features)
        tensors = []
        for i, spec in enumerate(flat_spec):
            tensor = tf.io.parse_tensor(parsed[f"t{i}"], spec.dtype)
            tensor.set_shape(([None] if stacked else []) + spec.shape.as_list())
            tensors.append(tensor)
        return tf.nest.pack_sequence_as(element_spec, tensors)

    def slices(*columns):  # tf.data passes a tuple element as separate arguments
        return tf.data.Dataset.from_tensor_slices(columns[0] if len(columns) == 1 else columns)

    records = tf.data.TFRecordDataset(path).map(parse)
    return records.flat_map(slices) if stacked else records
