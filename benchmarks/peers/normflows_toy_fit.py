"""Peer side of experiments/toy_densities.py: trains a `normflows` (PyTorch) Residual Flow on
given 2-D batches with the Residual Flows toy configuration (train_toy.py) and reports its
test NLL. Runs inside the benchmark-only environment (benchmarks/.venv-peers, torch CPU +
normflows); never imported by the package.

The network is train_toy.py's: ``n_blocks`` x ``Residual(LipschitzMLP([2, *hidden, 2]))``,
each MLP ``[Swish, InducedNormLinear]`` per layer (LipSwish, the activation first, the last
layer near zero at init), spectral norms scaled to ``coeff`` with exactly ``power_iters``
power iterations after every optimiser step (``nf.utils.update_lipschitz``: normflows'
layers never iterate in their forward, so without it the scaling stays that of the
initial weights), geometric(``p``) roulette with ``n_exact`` terms in
its own (numpy) count, the gradient through the terms (``reduce_memory=False``), no
ActNorm, a standard normal base; Adam (0.9, 0.999) without weight decay. Before the test
evaluation every layer runs 200 power iterations (as train_toy.py does before each
validation); in eval mode the 2-D blocks take the exact log-det (brute force).

Input: an .npz with ``batches`` (steps, batch, 2) and ``test`` (n, 2), float32.
Prints one JSON line: test NLL (mean and standard error over test points), the loss every
``--log-every`` steps, wall time of training and the parameter count.
"""

import argparse
import json
import time

import normflows as nf
import numpy as np
import torch


def build(n_blocks: int, hidden: list[int], coeff: float, power_iters: int, n_exact: int, p: float):
    flows = []
    for _ in range(n_blocks):
        net = nf.nets.LipschitzMLP([2, *hidden, 2], lipschitz_const=coeff, max_lipschitz_iter=power_iters,
                                   init_zeros=True)
        flows.append(nf.flows.Residual(net, reduce_memory=False, n_exact_terms=n_exact, geom_p=p))
    base = nf.distributions.DiagGaussian(2, trainable=False)
    return nf.NormalizingFlow(q0=base, flows=flows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help=".npz with batches (steps, batch, 2) and test (n, 2)")
    ap.add_argument("--n-blocks", type=int, required=True)
    ap.add_argument("--hidden", type=str, default="128-128-128-128")
    ap.add_argument("--coeff", type=float, default=0.9)
    ap.add_argument("--power-iters", type=int, default=5)
    ap.add_argument("--n-exact", type=int, default=2, help="numpy's count: 2 = the official train_toy.py")
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=100)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # normflows draws the roulette count with numpy
    arrays = np.load(args.data)
    batches, test = torch.from_numpy(arrays["batches"]), torch.from_numpy(arrays["test"])
    model = build(args.n_blocks, [int(h) for h in args.hidden.split("-")], args.coeff, args.power_iters,
                  args.n_exact, args.p)
    # train_toy.py's Adam never applies its weight decay; torch's Adam without it is the same update.
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(batches.shape[0]):
        opt.zero_grad()
        loss = model.forward_kld(batches[step])
        loss.backward()
        opt.step()
        # normflows' Lipschitz layers never run their power iteration in forward (update=False):
        # like train_toy.py, run it after every optimiser step, or the scaling goes stale.
        nf.utils.update_lipschitz(model, args.power_iters)
        if step % args.log_every == 0 or step == batches.shape[0] - 1:
            losses.append([step, float(loss)])
    train_s = time.perf_counter() - t0

    with torch.no_grad():
        nf.utils.update_lipschitz(model, 200)  # train_toy.py before each validation
        model.eval()
        nll = torch.cat([-model.log_prob(chunk) for chunk in torch.split(test, 2000)]).double().numpy()
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peer": "normflows", "version": nf.__version__, "torch": torch.__version__,
                      "threads": args.threads, "nll": float(nll.mean()),
                      "nll_stderr": float(nll.std(ddof=1) / np.sqrt(len(nll))), "finite": bool(np.isfinite(nll).all()),
                      "n_test": len(nll), "train_s": train_s, "steps": int(batches.shape[0]), "losses": losses,
                      "n_params": n_params}))


if __name__ == "__main__":
    main()
