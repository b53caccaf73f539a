"""Federated learning algorithms built from TFF components: client work and process builders."""

from keras_luar.algorithms.client_work import build_client_work, build_learning_process
from keras_luar.algorithms.local_training import build_local_training

__all__ = ["build_client_work", "build_learning_process", "build_local_training"]
