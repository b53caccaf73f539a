"""Federated data: client partitioners and the default digits data set.

`partition_dirichlet` reproduces the label-skewed split used by the FedLUAR
paper; `partition_iid` is the uniform baseline; `load_digits_federated` builds
a ready-to-train `FederatedData` from scikit-learn's bundled digits.
"""

from keras_luar.data.clients import as_client_datasets, check_client_datasets
from keras_luar.data.digits import load_digits_federated
from keras_luar.data.federated import FederatedData
from keras_luar.data.partition import partition_dirichlet, partition_iid

__all__ = [
    "FederatedData",
    "as_client_datasets",
    "check_client_datasets",
    "load_digits_federated",
    "partition_dirichlet",
    "partition_iid",
]

from keras_luar.data.femnist import load_femnist_federated  # noqa: E402
from keras_luar.data.shakespeare import load_shakespeare_federated  # noqa: E402

__all__ += ["load_femnist_federated", "load_shakespeare_federated"]

from keras_luar.data.agnews import load_agnews_federated, load_agnews_vocabulary  # noqa: E402

__all__ += ["load_agnews_federated", "load_agnews_vocabulary"]

from keras_luar.data.cifar import (  # noqa: E402
    load_cifar10_federated,
    load_cifar100_federated,
    load_cifar_federated,
)

__all__ += ["load_cifar10_federated", "load_cifar100_federated", "load_cifar_federated"]
