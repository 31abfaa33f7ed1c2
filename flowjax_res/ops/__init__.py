"""Pure functions on arrays: no Flax, no state, no I/O. One mechanism per file."""
from flowjax_res.ops.keys import as_typed_key, per_example_keys, split_key
from flowjax_res.ops.probes import hutchinson_probes
from flowjax_res.ops.roulette import (
    geometric_survival,
    poisson_survival,
    roulette_sample,
    roulette_survival,
    sample_geometric,
    sample_poisson,
)
from flowjax_res.ops.logdet import exact_residual_logdet, residual_forward_with_info, residual_logdet, residual_logdet_with_info
from flowjax_res.ops.logdet_config import LogDetConfig
from flowjax_res.ops.iteration import StoppingRule, iterate, stopping_rule
from flowjax_res.ops.neumann import (
    neumann_joint_grad,
    neumann_surrogate,
    neumann_surrogate_grad,
    with_neumann_gradient,
    with_neumann_gradient_joint,
)
from flowjax_res.ops.lanczos import lanczos_norm, lanczos_steps
from flowjax_res.ops.power_iteration import (
    conv_apply,
    conv_fourier_norm,
    conv_output_shape,
    conv_spectral_norm,
    dense_spectral_norm,
    init_power_blocks,
    init_power_vectors,
    lipschitz_scale,
    power_iteration,
    psd_top_eigenvalue_bound,
    random_unit_vector,
    subspace_iteration,
)
from flowjax_res.ops.activations import activation_names, elu, get_activation, lipswish, maxmin, softplus
from flowjax_res.ops.autoregressive_conv import (
    autoregressive_conv,
    autoregressive_conv_inverse,
    autoregressive_conv_logdet,
    autoregressive_mask,
)
from flowjax_res.ops.emerging_conv import emerging_conv, emerging_conv_inverse, emerging_conv_logdet
from flowjax_res.ops.periodic_conv import periodic_conv, periodic_conv_inverse, periodic_conv_logdet, periodic_kernel_fft
from flowjax_res.ops.conv1x1 import (
    conv1x1,
    conv1x1_inverse,
    conv1x1_logdet,
    householder_product,
    plu_inverse,
    plu_weight,
    qr_inverse,
    qr_weight,
    triangular_logdet,
)
from flowjax_res.ops.fixed_point import fixed_point_inverse
from flowjax_res.ops.induced_norm import (
    conv_upper_bound,
    dense_upper_bound,
    dual_vector,
    induced_norm,
    induced_norm_reference,
    induced_norm_upper_bound,
    vector_norm,
)
