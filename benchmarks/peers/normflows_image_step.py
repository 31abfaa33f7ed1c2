"""Peer side of benchmarks/speed_image.py: a multi-scale convolutional Residual Flow built
from `normflows` (PyTorch) parts, timed per training step, per 1,000 samples and per 1,000
evaluated images. Runs inside the benchmark-only environment (benchmarks/.venv-peers,
torch CPU + normflows); never imported by the package.

The model mirrors ``flowjax_res.flows.builders.build_image_flow`` (see speed_image.py):
dequantised inputs in [0, 1] -> logit(alpha + (1 - 2 alpha) x), then per scale
``ActNorm -> [Residual(LipschitzCNN), ActNorm] x n_blocks``, a squeeze between scales with
half of the channels factored out, and ``[Residual(LipschitzMLP), ActNorm] x n_fc`` on the
flattened last scale; a standard normal on every latent part. normflows' residual blocks
(code of Chen et al. 2019) use the Neumann gradient with backward-in-forward
(``reduce_memory=True``) and the roulette estimator; its CNN puts a LipSwish before every
convolution (pre-activation), one more activation per block than ours.

normflows' Lipschitz layers apply their stored normalisation in the forward pass and run
their power iteration only in ``nf.utils.update_lipschitz(model, n_iterations)``, which the
package's Residual Flow example (``examples/residual.ipynb``) calls after every optimiser step
with ``n_iterations=50``; the
official Residual Flows code iterates to tolerance in its training forward pass.
Each step here is timed twice over: the optimiser step alone (``step_s``) and
``update_lipschitz(model, --lipschitz-iters)`` after it (``lipschitz_s``), so that the step
as its users run it is ``step_s + lipschitz_s`` (``--lipschitz-iters 0`` skips the call).

Prints one JSON line.
"""

import argparse
import json
import math
import resource
import time

import normflows as nf
import torch


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class ImageResFlow(torch.nn.Module):
    def __init__(self, shape, n_scales, n_blocks, hidden, kernels, n_fc, fc_hidden, coeff, power_iters,
                 n_exact_terms, alpha):
        super().__init__()
        c, h, w = shape
        self.shape, self.alpha = (c, h, w), alpha
        self.scales = torch.nn.ModuleList()
        self.factor = []
        for i in range(n_scales):
            flows = [nf.flows.ActNorm((c, 1, 1))]
            for _ in range(n_blocks):
                net = nf.nets.LipschitzCNN([c, *([hidden] * (len(kernels) - 1)), c], list(kernels),
                                           lipschitz_const=coeff, max_lipschitz_iter=power_iters, init_zeros=True)
                flows += [nf.flows.Residual(net, reduce_memory=True, n_exact_terms=n_exact_terms, geom_p=0.5),
                          nf.flows.ActNorm((c, 1, 1))]
            self.scales.append(torch.nn.ModuleList(flows))
            if i < n_scales - 1:
                c, h, w = 4 * c, h // 2, w // 2
                self.factor.append(c // 2)
                c = c - c // 2
        self.last_shape = (c, h, w)
        d = c * h * w
        tail = []
        for _ in range(n_fc):
            net = nf.nets.LipschitzMLP([d, *fc_hidden, d], lipschitz_const=coeff, max_lipschitz_iter=power_iters,
                                       init_zeros=True)
            tail += [nf.flows.Residual(net, reduce_memory=True, n_exact_terms=n_exact_terms, geom_p=0.5),
                     nf.flows.ActNorm((d,))]
        self.tail = torch.nn.ModuleList(tail)
        self.squeeze = nf.flows.Squeeze()

    def log_prob(self, x):
        """``log p(x)`` of dequantised images ``x`` in [0, 1], NCHW (data space of [0, 1])."""
        a = self.alpha
        y = a + (1 - 2 * a) * x
        z = torch.log(y) - torch.log1p(-y)
        ld = (math.log(1 - 2 * a) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(1)
        latents = []
        for i, flows in enumerate(self.scales):
            for f in flows:  # normflows' inverse is the data -> latent direction
                z, l = f.inverse(z)
                ld = ld + l
            if i < len(self.scales) - 1:
                z, _ = self.squeeze.inverse(z)
                k = self.factor[i]
                latents.append(z[:, :k].flatten(1))
                z = z[:, k:]
        z = z.flatten(1)
        for f in self.tail:
            z, l = f.inverse(z)
            ld = ld + l
        latents.append(z)
        z = torch.cat(latents, 1)
        base = -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return base + ld

    @torch.no_grad()
    def sample(self, n):
        c, h, w = self.shape
        total = c * h * w
        z_all = torch.randn(n, total)
        d = math.prod(self.last_shape)
        z = z_all[:, total - d:]
        for f in reversed(self.tail):
            z, _ = f.forward(z)
        z = z.view(n, *self.last_shape)
        offset = 0
        # the factored-out parts, in the order they left the flow, then the last scale
        sizes, cc, hh, ww = [], c, h, w
        for i in range(len(self.scales) - 1):
            cc, hh, ww = 4 * cc, hh // 2, ww // 2
            sizes.append((self.factor[i], hh, ww))
            cc = cc - self.factor[i]
        starts = []
        for s in sizes:
            starts.append(offset)
            offset += math.prod(s)
        for i in range(len(self.scales) - 1, -1, -1):
            for f in reversed(self.scales[i]):
                z, _ = f.forward(z)
            if i > 0:
                k, hh, ww = sizes[i - 1]
                zf = z_all[:, starts[i - 1]:starts[i - 1] + k * hh * ww].view(n, k, hh, ww)
                z, _ = self.squeeze.forward(torch.cat([zf, z], 1))
        a = self.alpha
        return (torch.sigmoid(z) - a) / (1 - 2 * a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True, help="H,W,C")
    ap.add_argument("--n-scales", type=int, required=True)
    ap.add_argument("--n-blocks", type=int, required=True)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--kernels", default="3,1,3")
    ap.add_argument("--n-fc", type=int, default=0)
    ap.add_argument("--fc-hidden", default="")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coeff", type=float, default=0.98)
    ap.add_argument("--power-iters", type=int, default=1)
    ap.add_argument("--n-exact-terms", type=int, default=2, help="normflows' convention (count on {1, 2, ...})")
    ap.add_argument("--lipschitz-iters", type=int, default=50,
                    help="power iterations of nf.utils.update_lipschitz after every step (50, as normflows' "
                         "examples/residual.ipynb; 0: not called)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--sample", type=int, default=0, help="also time sampling this many images")
    ap.add_argument("--eval", type=int, default=0, help="also time evaluation (model.eval()) of this many images")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w, c = (int(s) for s in args.shape.split(","))
    fc_hidden = [int(s) for s in args.fc_hidden.split(",") if s]
    model = ImageResFlow((c, h, w), args.n_scales, args.n_blocks, args.hidden,
                         [int(k) for k in args.kernels.split(",")], args.n_fc, fc_hidden, args.coeff,
                         args.power_iters, args.n_exact_terms, args.alpha)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(1)
    rss0 = rss_mib()
    times, lip_times = [], []
    for i in range(args.warmup + args.steps):
        x = (torch.randint(0, 256, (args.batch, c, h, w), generator=gen).float()
             + torch.rand(args.batch, c, h, w, generator=gen)) / 256.0
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = -model.log_prob(x).mean()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        if args.lipschitz_iters:
            nf.utils.update_lipschitz(model, args.lipschitz_iters)
        dl = time.perf_counter() - t1
        if i >= args.warmup:
            times.append(dt)
            lip_times.append(dl)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"peer": "normflows", "torch": torch.__version__, "threads": args.threads,
           "n_params": sum(p.numel() for p in model.parameters()), "step_s": times, "lipschitz_s": lip_times,
           "lipschitz_iters": args.lipschitz_iters, "last_loss": float(loss.detach()),
           "rss_before_mib": rss0, "peak_rss_mib": peak}
    if args.sample:
        model.eval()
        model.sample(2)  # warm
        t0 = time.perf_counter()
        model.sample(args.sample)
        out["sample_s_per_1000"] = (time.perf_counter() - t0) * 1000.0 / args.sample
    if args.eval:
        model.eval()
        x = (torch.randint(0, 256, (args.eval, c, h, w), generator=gen).float() + 0.5) / 256.0
        with torch.no_grad():
            model.log_prob(x[:2])
        t0 = time.perf_counter()
        # normflows' blocks need autograd for their log-det even in evaluation mode
        lp = model.log_prob(x).detach()
        out["eval_s_per_1000"] = (time.perf_counter() - t0) * 1000.0 / args.eval
        out["eval_finite"] = bool(torch.isfinite(lp).all())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
