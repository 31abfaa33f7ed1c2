"""Peer side of benchmarks/speed_toy.py: times one training step of a `normflows`
(PyTorch) residual flow on 2-D data. Runs inside the benchmark-only environment
(benchmarks/.venv-peers, torch CPU + normflows); never imported by the package.

Prints one JSON line: {"config": ..., "step_s": [...], "threads": ...}.
"""

import argparse
import json
import time

import normflows as nf
import torch


def build(n_blocks: int, hidden: list[int], coeff: float, power_iters: int):
    flows = []
    for _ in range(n_blocks):
        net = nf.nets.LipschitzMLP(
            [2, *hidden, 2], lipschitz_const=coeff, max_lipschitz_iter=power_iters, init_zeros=True
        )
        # reduce_memory=True: Neumann gradient + backward-in-forward (Chen et al. 2019).
        flows.append(nf.flows.Residual(net, reduce_memory=True, n_exact_terms=2, geom_p=0.5))
    base = nf.distributions.DiagGaussian(2, trainable=False)
    return nf.NormalizingFlow(q0=base, flows=flows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-blocks", type=int, required=True)
    ap.add_argument("--hidden", type=str, required=True, help="e.g. 128-128")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coeff", type=float, default=0.98)
    ap.add_argument("--power-iters", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden = [int(h) for h in args.hidden.split("-")]
    model = build(args.n_blocks, hidden, args.coeff, args.power_iters)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(1)
    times = []
    for i in range(args.warmup + args.steps):
        x = torch.randn(args.batch, 2, generator=gen) * 2.0
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = model.forward_kld(x)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peer": "normflows", "torch": torch.__version__, "threads": args.threads,
                      "n_params": n_params, "step_s": times, "last_loss": float(loss)}))


if __name__ == "__main__":
    main()
