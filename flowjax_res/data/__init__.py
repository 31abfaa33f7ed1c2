"""data sub-package: toy 2-D densities, embedded image sets, TFDS + grain pipelines.

``GrainBatches`` is imported on first use (grain takes a while to import)."""

from flowjax_res.data.toy import TOY_DATASETS, eight_gaussians_log_prob, sample_toy
from flowjax_res.data.digits import load_digits
from flowjax_res.data.registry import DatasetInfo, dataset_info, known_datasets, load_dataset
from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.tfds_sources import (TFDS_DATASETS, CorruptDataError, DatasetNotPrepared, TfdsSpec, open_tfds_source,
                                         tfds_spec)
from flowjax_res.data.tfds_local import write_as_mnist, write_tfds_dataset


def __getattr__(name):
    if name == "GrainBatches":
        from flowjax_res.data.grain_pipeline import GrainBatches

        return GrainBatches
    raise AttributeError(f"module 'flowjax_res.data' has no attribute {name!r}")
