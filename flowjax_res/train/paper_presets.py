"""The papers' runs as presets: which model, which data, which training settings.

A paper preset names one official run (``paper-cifar10``: the Residual Flows CIFAR-10 run;
``iresnet-cifar10``; ``emerging-cifar10``; ``paper-toy``: Residual Flows' 2-D densities,
``train_toy.py``; ...). Its *model* fields live beside the other
presets of its model (:data:`flowjax_res.flows.builders.PRESETS`,
:data:`flowjax_res.flows.glow.GLOW_PRESETS`), each commented with the official flag it
mirrors; this file holds what the training loop needs (optimiser, learning rate, warm-up,
batch, clip, EMA), the data set, the figures the paper reports and the parameter count of
the official network.

Sources (read from the public repositories; every value cites its flag):

- Residual Flows (Chen et al., 2019), ``rtqichen/residual-flows``: ``train_img.py``
  (``optim.Adam(..., betas=(0.9, 0.99))``; ``clip_grad_norm_(..., 1.)``; the EMA of
  ``utils.ExponentialMovingAverage``, decay 0.999, used for evaluation (``--ema-val``);
  ``--warmup-iters 1000``; ``--batchsize 64``; ``--lr 1e-3``; ``--wd 0``, which the repo's
  Adam never applies anyway) and the README commands quoted in the model presets.
- i-ResNet (Behrmann et al., 2019), ``jhjacobsen/invertible-resnet``:
  ``scripts/dens_est_cifar.sh`` (``--lr 0.003 --weight_decay 0. --batch 128
  --warmup_epochs 1``), ``CIFAR_main.py`` (``--optimizer adamax``); no gradient clipping and
  no EMA in ``models/utils_cifar.py``. The code's warm-up runs one epoch past its end, so
  the density run as written trains at about twice the flag's rate; the preset keeps the
  flag (3e-3).
- Emerging convolutions (Hoogeboom et al., 2019), ``ehoogeboom/emerging``: ``train.py``
  (Glow's Adamax, ``--lr 0.001``, ``--epochs_warmup 10``, 64 images per worker on 4 workers
  = 256 at 32x32, ``--weight_decay 1.`` = off, no clipping; the Polyak average is kept but
  never swapped in, so evaluation uses the raw weights). Adamax's second-moment decay there
  is ``1 - 1 / (iterations per epoch)`` = 1 - 1/195 at 32x32: 0.995 here.

Parameter counts: none of the three papers prints one for these runs that could be
checked here; ``official_params`` is the count of the official network derived from its
code (every convolution and linear layer with bias, ActNorm, LipSwish's beta, learned
priors; for Residual Flows also the two unused ``nn.Parameter`` scalars ``geom_p`` and
``lamb`` of every block), so the ratio to ours measures how faithfully the architecture is
mirrored. ``tests/train/test_paper_presets.py`` reports it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["PaperPreset", "PAPER_PRESETS", "TASK_PRESETS", "paper_preset", "paper_train_fields"]


@dataclasses.dataclass(frozen=True)
class PaperPreset:
    """One official run: ``model`` and its preset of the same ``name``; ``dataset`` (a
    ``--dataset`` name, ``None`` where the library has no loader for it); ``input_shape``
    the network's input; ``train`` the :class:`~flowjax_res.train.config.TrainConfig`
    fields of the run; ``official_params`` the official network's parameter count (derived
    from its code); ``paper_bpd`` the test bits/dim the paper reports; ``source`` the
    command or script mirrored; ``notes`` where ours differs and why."""

    name: str
    model: str
    dataset: str | None
    input_shape: tuple[int, ...]
    train: dict[str, Any]
    official_params: int | None
    paper_bpd: float | None
    source: str
    notes: str = ""


_RESFLOW_TRAIN = dict(optimizer="adam", beta1=0.9, beta2=0.99, eps=1e-8, lr=1e-3, warmup=1000, grad_clip=1.0,
                      weight_decay=0.0, ema_decay=0.999, batch_size=64, eval_batch_size=200)
_IRESNET_TRAIN = dict(optimizer="adamax", beta1=0.9, beta2=0.999, eps=1e-8, lr=3e-3, grad_clip=0.0, weight_decay=0.0,
                      ema_decay=0.0, batch_size=128)
_EMERGING_TRAIN = dict(optimizer="adamax", beta1=0.9, beta2=0.995, eps=1e-8, lr=1e-3, grad_clip=0.0, weight_decay=0.0,
                       ema_decay=0.0, batch_size=256, warmup=10 * math.ceil(50000 / 256))

# train_toy.py: resflows.optimizers.Adam(lr=--lr 1e-3, weight_decay=--weight-decay 1e-5), betas
# (0.9, 0.999); its decay line `p.data.add(-step_size * weight_decay, p.data)` is not in place, so
# no weight decay is ever applied: 0 here. --batch_size 500 fresh points per step; no warm-up,
# clipping or EMA; --test_batch_size 10000 fresh points.
_TOY_TRAIN = dict(optimizer="adam", beta1=0.9, beta2=0.999, eps=1e-8, lr=1e-3, warmup=0, grad_clip=0.0,
                  weight_decay=0.0, ema_decay=0.0, batch_size=500, n_test=10000)

_RESFLOW_NOTES = ("Convolutions normalised by the certified Fourier bound of the same spectral norm (official: power "
                  "iteration on the operator to tolerance 1e-3); evaluation log-det: roulette with 20 exact terms and "
                  "4 probes (official: 20 exact terms, 1 probe).")

PAPER_PRESETS: dict[str, PaperPreset] = {p.name: p for p in [
    PaperPreset("paper-mnist", "resflow", "mnist", (28, 28, 1), dict(_RESFLOW_TRAIN), 16_608_693, 0.970,
                "python train_img.py --data mnist --imagesize 28 --actnorm True --wd 0", _RESFLOW_NOTES),
    PaperPreset("paper-cifar10", "resflow", "cifar10", (32, 32, 3), dict(_RESFLOW_TRAIN), 25_174_233, 3.280,
                "python train_img.py --data cifar10 --actnorm True", _RESFLOW_NOTES),
    PaperPreset("paper-imagenet32", "resflow", "imagenet32", (32, 32, 3), dict(_RESFLOW_TRAIN), 47_099_289, 4.010,
                "python train_img.py --data imagenet32 --actnorm True --nblocks 32-32-32", _RESFLOW_NOTES),
    PaperPreset("paper-imagenet64", "resflow", "imagenet64", (64, 64, 3), dict(_RESFLOW_TRAIN), 53_294_475, 3.757,
                "python train_img.py --data imagenet64 --imagesize 64 --actnorm True --nblocks 32-32-32 "
                "--factor-out True --squeeze-first True", _RESFLOW_NOTES),
    PaperPreset("paper-celebahq", "resflow", None, (256, 256, 3), dict(_RESFLOW_TRAIN, batch_size=40), 136_777_655,
                0.992, "python train_img.py --data celebahq --imagesize 256 --nbits 5 --actnorm True --act elu "
                "--batchsize 8 --update-freq 5 --n-exact-terms 8 --fc-end False --factor-out True --squeeze-first True "
                "--nblocks 16-16-16-16-16-16",
                _RESFLOW_NOTES + " Batch 40 in one step = the official 8 x 5 accumulated (--update-freq 5). "
                "CelebA-HQ 256 at 5 bits is not among the library's data sets (TFDS offers it only with a manual "
                "download): give --dataset with a prepared set of that shape and n_levels 32."),
    PaperPreset("iresnet-cifar10", "iresnet", "cifar10", (32, 32, 3), dict(_IRESNET_TRAIN, warmup=math.ceil(50000 / 128)),
                25_028_544, 3.45,
                "python CIFAR_main.py --nBlocks 16 16 16 --nStrides 1 2 2 --nChannels 512 512 512 --coeff 0.9 "
                "-densityEstimation -multiScale --lr 0.003 --weight_decay 0. --numSeriesTerms 5 --dataset cifar10 "
                "--batch 128 --warmup_epochs 1",
                "ActNorm after each block (official: before each block), with one ActNorm leading the first "
                "scale only."),
    PaperPreset("iresnet-mnist", "iresnet", "mnist32x3", (32, 32, 3), dict(_IRESNET_TRAIN, warmup=math.ceil(60000 / 128)),
                25_028_544, 1.06,
                "CIFAR_main.py --dataset mnist -densityEstimation -multiScale (no script in the repository; the "
                "CIFAR-10 architecture and settings)",
                "The official code pads MNIST by 2 to 32x32 and tiles it to 3 channels: the data set mnist32x3 "
                "(TFDS mnist read that way). Paper figure: 1.06 (the Residual Flows table lists 1.05)."),
    PaperPreset("emerging-cifar10", "glow", "cifar10", (32, 32, 3), dict(_EMERGING_TRAIN), 45_286_356, 3.34,
                "train.py --problem cifar10 --image_size 32 --n_level 3 --depth 32 --flow_permutation 3 "
                "--flow_coupling 1 --seed 2 --learnprior --lr 0.001 --n_bits_x 8 --epochs 4001",
                "Emerging convolution before the 1x1 (official: after); logit-free [-0.5, 0.5] inputs as the "
                "official."),
    PaperPreset("emerging-imagenet32", "glow", "imagenet32", (32, 32, 3), dict(_EMERGING_TRAIN), 67_885_716, 4.09,
                "train.py --problem imagenet-oord --image_size 32 --n_level 3 --depth 48 --flow_permutation 3 "
                "--flow_coupling 1 --seed 0 --learnprior --lr 0.001 --n_bits_x 8",
                "Warm-up: 10 epochs of 50,000 images (train.py's --n_train, also for ImageNet)."),
    PaperPreset("paper-toy", "resflow", "pinwheel", (2,), dict(_TOY_TRAIN), 5_018_500, None,
                "python train_toy.py --data pinwheel (argparse defaults; --data names any of the eight densities)",
                "The official power iteration runs 5 steps after each optimiser step and 200 before "
                "each validation; ours runs exactly 5 in each training forward and to tolerance in evaluation. The "
                "test set: 10,000 fixed points per data set (official: a fresh draw per validation). Parameters: "
                "the official count includes the two unused scalars geom_p and lamb per block. Paper figure: none "
                "(the densities are shown as images only)."),
]}


# Classification and hybrid runs. Their ``train`` fields include the task.
# i-ResNet's classifier, scripts/classify_cifar.sh with CIFAR_main.py's defaults: --optimizer sgd
# (torch.optim.SGD, momentum 0.9, --weight_decay 5e-4 added to the gradient), --lr 0.1, --batch 128,
# --warmup_epochs 10 (10 x 391 steps of CIFAR-10); no clipping or EMA. The official schedule divides the
# rate by 5 at epochs 60, 120 and 160 (of --epochs 200): not mirrored (constant after the warm-up).
_ICLASSIFY_TRAIN = dict(optimizer="sgd", beta1=0.9, lr=0.1, weight_decay=5e-4, warmup=10 * math.ceil(50000 / 128),
                        grad_clip=0.0, ema_decay=0.0, batch_size=128, task="classify")
# Residual Flows' hybrid models: train_img.py --task hybrid (its default flags: the optimiser, clip, EMA
# and batch of _RESFLOW_TRAIN; the classifier head --cdim 256); --scale-dim True is lambda = 1/D.
_HYBRID_TRAIN = dict(_RESFLOW_TRAIN, task="hybrid", hybrid_lambda=1.0)

TASK_PRESETS: dict[str, PaperPreset] = {p.name: p for p in [
    PaperPreset("iresnet-classify-cifar10", "iresnet", "cifar10", (32, 32, 3), dict(_ICLASSIFY_TRAIN), None, None,
                "python CIFAR_main.py --nBlocks 7 7 7 --nStrides 1 2 2 --nChannels 32 64 128 --coeff 0.9 --batch 128 "
                "--init_ds 1 --inj_pad 13 --powerIterSpectralNorm 1 --nonlin elu --optimizer sgd "
                "(scripts/classify_cifar.sh)",
                "The head normalises with ActNorm (official: BatchNorm); constant learning rate after the warm-up "
                "(official: x0.2 at epochs 60, 120, 160); inputs as bin centres in [-0.5, 0.5] (official: "
                "per-channel mean/std normalisation, random crops and flips); no dropout (CIFAR_main.py's "
                "--drop_rate defaults to 0.1; whether its blocks apply it was not checked). With model 'vanilla' "
                "the same network without the constraint (the paper's Table 2 baseline)."),
    PaperPreset("hybrid-resflow-mnist", "resflow", "mnist", (28, 28, 1), dict(_HYBRID_TRAIN), None, None,
                "python train_img.py --data mnist --imagesize 28 --actnorm True --task hybrid [--scale-dim True]",
                "The paper's hybrid commands are not in the repository's README: train_img.py's defaults with the "
                "MNIST flags of paper-mnist and --task hybrid. --lambda sets the weight (1: --task hybrid, 1/D: "
                "--scale-dim True, 0: a classifier on the flow's features)."),
    PaperPreset("hybrid-glow-mnist", "glow", "mnist", (28, 28, 1), dict(_HYBRID_TRAIN), None, None,
                "the coupling counterpart (train_img.py --block coupling trains affine coupling blocks in the same "
                "multi-scale layout); here Glow at the paper's width, 2 scales of 32 steps (28x28 allows two)",
                "Glow's architecture rather than the Residual Flows code's coupling blocks; the training settings of "
                "hybrid-resflow-mnist, so that the two differ only in their blocks."),
]}


def paper_preset(name: str) -> PaperPreset:
    """The :class:`PaperPreset` ``name``, of :data:`PAPER_PRESETS` or :data:`TASK_PRESETS`
    (``ValueError`` listing the names otherwise)."""
    if name in PAPER_PRESETS:
        return PAPER_PRESETS[name]
    if name in TASK_PRESETS:
        return TASK_PRESETS[name]
    raise ValueError(f"paper preset must be one of {sorted(PAPER_PRESETS) + sorted(TASK_PRESETS)}, got {name!r}")


def paper_train_fields(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (TrainConfig fields) completed by the official run ``name``: its model
    (``ValueError`` if ``given`` names another), data set and training fields wherever
    ``given`` has none."""
    preset = paper_preset(name)
    allowed = (preset.model, "vanilla") if preset.train.get("task") == "classify" else (preset.model,)
    if given.get("model", preset.model) not in allowed:
        raise ValueError(f"preset {name!r} is a {preset.model!r} preset; got model {given['model']!r} "
                         f"(leave --model out or give --model {preset.model})")
    fields: dict[str, Any] = dict(model=preset.model, **preset.train)
    if preset.dataset is not None:
        fields["dataset"] = preset.dataset
    fields.update(given)
    fields["preset"] = name
    if "dataset" not in fields:
        raise ValueError(f"paper preset {name!r} has no data set the library can load ({preset.notes}); "
                         f"give one (--dataset / dataset=)")
    return fields
