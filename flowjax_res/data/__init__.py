"""data sub-package."""

from flowjax_res.data.toy import TOY_DATASETS, eight_gaussians_log_prob, sample_toy
from flowjax_res.data.digits import load_digits
from flowjax_res.data.registry import DatasetInfo, dataset_info, known_datasets, load_dataset
