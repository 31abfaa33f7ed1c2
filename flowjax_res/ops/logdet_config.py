"""The settings of the residual log-det estimators (:mod:`flowjax_res.ops.logdet`), one
frozen dataclass checked once where it is built and passed whole (it is hashable, so a
jitted function can take it as a static argument)."""

from __future__ import annotations

import dataclasses
from typing import Any

from flowjax_res._checks import (
    check_bool,
    check_choice,
    check_nonnegative_int,
    check_open_interval,
    check_positive,
    check_positive_int,
)
from flowjax_res.ops.probes import PROBE_KINDS
from flowjax_res.ops.roulette import ROULETTE_DISTS

ESTIMATORS = ("exact", "series", "roulette")
GRADIENTS = ("autodiff", "neumann", "neumann_bif")


@dataclasses.dataclass(frozen=True)
class EstimatorFields:
    """The estimator settings that model configs carry as flat fields
    (:class:`~flowjax_res.flows.builders.ImageFlowConfig` ``estimator="series"``, ...),
    declared once here; :class:`LogDetConfig` adds the rest and checks them all."""

    estimator: str = "roulette"
    n_terms: int = 10
    dist: str = "geometric"
    p: float = 0.5
    lam: float = 2.0
    n_exact_terms: int = 2
    probe: str = "gaussian"
    n_probes: int = 1
    gradient: str = "neumann_bif"
    batch_chunks: int = 1

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclasses.dataclass(frozen=True)
class LogDetConfig(EstimatorFields):
    """Settings of :func:`flowjax_res.ops.logdet.residual_logdet`: ``estimator`` in
    ``"exact" | "series" | "roulette"``; ``n_terms`` for ``"series"``; roulette law
    ``dist`` (``"geometric"`` with ``p`` / ``"poisson"`` with ``lam``) and
    ``n_exact_terms`` (the number of terms always evaluated; the official code's
    geometric ``n_exact_terms = m`` is our ``m + 1``, its Poisson one is ours: see
    :mod:`flowjax_res.ops.logdet`); Hutchinson ``probe`` and ``n_probes``; ``gradient``
    in ``"neumann_bif" | "neumann" | "autodiff"``; ``share_terms``; ``max_terms``;
    ``batch_chunks`` (execution only: the batch is processed in that many chunks side
    by side, which lets a multi-core CPU run their products concurrently)."""

    share_terms: bool = True
    max_terms: int = 64

    def __post_init__(self):
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_positive_int("n_terms", self.n_terms)
        check_choice("dist", self.dist, ROULETTE_DISTS)
        check_open_interval("p", self.p, 0.0, 1.0)
        check_positive("lam", self.lam)
        check_nonnegative_int("n_exact_terms", self.n_exact_terms)
        check_choice("probe", self.probe, PROBE_KINDS)
        check_positive_int("n_probes", self.n_probes)
        check_choice("gradient", self.gradient, GRADIENTS)
        check_bool("share_terms", self.share_terms)
        check_positive_int("max_terms", self.max_terms)
        check_positive_int("batch_chunks", self.batch_chunks)
        if self.estimator == "roulette" and self.max_terms < self.n_exact_terms:
            raise ValueError(f"max_terms must be >= n_exact_terms ({self.n_exact_terms}) for the roulette "
                             f"estimator, got {self.max_terms!r}")

    @classmethod
    def of(cls, config: LogDetConfig | dict | None = None, **settings) -> LogDetConfig:
        """``config`` (a :class:`LogDetConfig`, a dict of its fields or ``None`` for the
        defaults) with ``settings`` replacing some of its fields; unknown names raise
        ``TypeError`` listing the allowed ones."""
        unknown = sorted(set(settings) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"unknown log-det settings {unknown}; allowed: {list(cls.field_names())}")
        if config is None:
            return cls(**settings)
        if isinstance(config, dict):
            return cls(**{**config, **settings})
        if not isinstance(config, cls):
            raise TypeError(f"config must be a LogDetConfig, a dict of its fields or None, got {config!r}")
        return dataclasses.replace(config, **settings) if settings else config

    @property
    def stochastic(self) -> bool:
        """Whether the estimate needs a random key (all but ``"exact"``)."""
        return self.estimator != "exact"

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments."""
        return dataclasses.asdict(self)


#: What the log-det functions accept as settings: a :class:`LogDetConfig`, a dict of its
#: fields or ``None`` (the defaults); see :meth:`LogDetConfig.of`.
LogDetLike = LogDetConfig | dict | None
