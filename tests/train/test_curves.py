"""The run directory's training curves (``curves.png``): the loss of the train lines of
metrics.jsonl and the test metric, and nothing written without a finite loss."""

import numpy as np

from flowjax_res.train.plots import plot_training_curves


def test_curves_from_metric_lines(tmp_path):
    records = [{"step": s, "split": "train", "loss": 3.0 / s} for s in range(1, 11)]
    records += [{"step": 5, "split": "test", "nll": 1.2}, {"step": 10, "split": "test", "nll": 1.1}]
    path = plot_training_curves(str(tmp_path / "c.png"), records, title="t")
    assert path and (tmp_path / "c.png").stat().st_size > 1000
    only_train = plot_training_curves(str(tmp_path / "d.png"), records[:10])
    assert only_train and (tmp_path / "d.png").is_file()


def test_no_curves_without_a_finite_loss(tmp_path):
    records = [{"step": 1, "split": "train", "loss": float(np.nan)}, {"step": 1, "split": "test", "nll": 1.0}]
    assert plot_training_curves(str(tmp_path / "c.png"), records) is None
    assert not (tmp_path / "c.png").exists()
