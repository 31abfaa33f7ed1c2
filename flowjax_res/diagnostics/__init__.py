"""Estimator diagnostics: bias, variance and cost of the residual log-det estimators
and their gradients, as tables and figures.

Sits above :mod:`flowjax_res.flows` (it inspects models); nothing below imports it.
"""

from flowjax_res.diagnostics.estimators import (
    config_label,
    default_configs,
    default_gradient_configs,
    estimator_study,
    quick_configs,
)
from flowjax_res.diagnostics.blocks import block_inputs, block_study, flow_study, residual_blocks
from flowjax_res.diagnostics.table import format_table
from flowjax_res.diagnostics.plots import plot_bias_std_vs_terms, plot_variance_cost, write_plots
