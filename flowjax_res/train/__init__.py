"""train sub-package."""

from flowjax_res.train.config import TrainConfig, load_config, save_config
from flowjax_res.train.loop import restore_state, train
