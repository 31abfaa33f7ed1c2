"""flows sub-package."""

from flowjax_res.flows.chain import Flow
from flowjax_res.flows.stacked import ResidualStack
from flowjax_res.flows.distribution import DiagonalGaussian, FlowDistribution, StandardNormal
from flowjax_res.flows.preprocess import Dequantize, Logit, Scale
from flowjax_res.flows.multiscale import MultiScale, multiscale_shapes
from flowjax_res.flows.builders import build_model, dense_residual_flow, iresnet, residual_flow
from flowjax_res.flows.glow import GlowConfig, count_params, glow, glow_config, match_hidden_channels
from flowjax_res.flows.classifier import (
    CLASSIFIER_PRESETS,
    ClassifierConfig,
    IResNetClassifier,
    build_classifier,
    classifier_config,
)
from flowjax_res.flows.hybrid import HybridModel
