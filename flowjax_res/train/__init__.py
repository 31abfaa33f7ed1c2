"""train sub-package."""

from flowjax_res.train.config import TrainConfig, load_config, save_config
from flowjax_res.train.loop import restore_state, train
from flowjax_res.train.sharding import make_mesh, maybe_initialize_distributed, put_batch, put_state, state_shardings
