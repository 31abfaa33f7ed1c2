"""One table (``flowjax_res.flows.tasks.TASK_MODELS``) says which models each task trains:
the training configuration and the model builder refuse the same pairs."""

from __future__ import annotations

import pytest

from flowjax_res.flows.builders import build_model
from flowjax_res.flows.tasks import TASK_MODELS, TASKS
from flowjax_res.train.config import MODELS, TrainConfig


@pytest.mark.parametrize("task", TASKS)
def test_the_config_and_the_builder_refuse_the_same_models(task):
    for model in MODELS:
        if model in TASK_MODELS[task]:
            assert TrainConfig(dataset="digits", model=model, task=task).model == model
            continue
        with pytest.raises(ValueError, match=f"model must be one of .* for task {task!r}"):
            TrainConfig(dataset="digits", model=model, task=task)
        with pytest.raises(ValueError, match="vanilla|classif"):  # before anything is built
            build_model(model, "digits", "tiny", 0, task=task)


def test_every_model_has_a_task():
    assert set(MODELS) == {m for models in TASK_MODELS.values() for m in models}
