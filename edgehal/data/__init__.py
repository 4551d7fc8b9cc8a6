"""Data sets held in memory as tensors, with batchwise augmentation.

Each data set builder returns a ``DataBundle``: train / val / test splits as
tensors plus what a model must know (input shape, class names, normalisation,
augmentation). Small data sets fit in memory, and batchwise tensor ops are many
times faster on 2 CPU cores than per-image PIL transforms.
"""

from edgehal.data.base import (DataBundle, DatasetInfo, Split, build_dataset, dataset_info, dataset_parameters,
                               list_datasets, register_dataset, resolve_data_root)

__all__ = ["DataBundle", "DatasetInfo", "Split", "build_dataset", "dataset_info", "dataset_parameters",
           "list_datasets", "register_dataset", "resolve_data_root"]
