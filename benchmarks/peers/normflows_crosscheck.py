"""Peer side of benchmarks/crosscheck_normflows.py: one `normflows` (PyTorch) residual
block in float64, its effective weights, g(x), y = x + g(x), exact log-dets and K
independent draws of its Russian-roulette log-det estimator on a fixed batch.

Runs inside the benchmark-only environment (benchmarks/.venv-peers, torch CPU +
normflows); never imported by the package.

    python normflows_crosscheck.py --workdir DIR

reads DIR/config.json and DIR/inputs.npz (``x``), writes DIR/peer.npz and prints one
JSON line of metadata. Keys of peer.npz:

  W{i}, b{i}, beta{i}   effective (power-iteration-rescaled) weight, bias and the Swish
                        beta parameter before dense layer i (softplus is applied by the
                        Swish itself)
  g, y                  g(x) = net(x) and y = x + g(x) via ``Residual.inverse`` (the
                        residual map when ``reverse=True``)
  logdet_slogdet        slogdet(I + J_g(x)), J from the peer's own ``batch_jacobian``
  logdet_bruteforce     eval-mode ``iResBlock._logdetgrad`` (2-D brute force; d = 2 only)
  logdet_flow           ``Residual.inverse(x)[1]`` in eval mode (= +log det; d = 2 only)
  logdet_exact_trace    eval-mode ``exact_trace=True``: exact traces, roulette with 20
                        exact terms (random count, near-exact)
  roulette              (K, batch): train-mode ``_logdetgrad`` of ``Residual(...,
                        reduce_memory=False)``, i.e. the basic (value) estimator: one
                        geometric count shared by the batch, one Gaussian probe per example
  surrogate             (K_s, batch): the value returned by ``reduce_memory=True`` in train
                        mode (the Neumann-gradient surrogate, not a log-det estimate)
  jac_norm              spectral norm of J_g(x) per example
"""

import argparse
import json
import pathlib

import normflows as nf
import numpy as np
import torch
from normflows.flows.residual import batch_jacobian


def effective_layers(net):
    """(W_eff, b, beta) per dense layer, in order; Swish precedes each linear layer."""
    mods = list(net.net)
    out = []
    with torch.no_grad():
        for sw, lin in zip(mods[0::2], mods[1::2]):
            assert isinstance(sw, nf.nets.lipschitz.Swish), type(sw)
            w = lin.compute_weight(update=False)
            out.append((w.clone(), lin.bias.clone(), sw.beta.clone()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    args = ap.parse_args()
    wd = pathlib.Path(args.workdir)
    cfg = json.loads((wd / "config.json").read_text())
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])

    d, h, c = cfg["d"], cfg["hidden"], cfg["coeff"]
    net = nf.nets.LipschitzMLP([d, h, h, d], lipschitz_const=c, max_lipschitz_iter=cfg["power_iters"],
                               init_zeros=False)
    # Make the Lipschitz rescaling bind: scale the raw weights up, then let the layer's own
    # power iteration converge (its u, v buffers drive compute_weight(update=False)).
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nf.nets.lipschitz.InducedNormLinear):
                if cfg["orthogonal"]:  # flat spectrum: the composite Jacobian is not tiny
                    torch.nn.init.orthogonal_(m.weight)
                m.weight.mul_(cfg["weight_scale"])
                m.bias.mul_(cfg["bias_scale"])
                m.compute_weight(update=True, n_iterations=200)
            if isinstance(m, nf.nets.lipschitz.Swish):
                m.beta.add_(torch.randn(1) * cfg["beta_jitter"])

    def residual(**kw):
        return nf.flows.Residual(net, reduce_memory=kw.pop("reduce_memory"), n_exact_terms=cfg["n_exact_terms"],
                                 geom_p=cfg["p"], **kw)

    flow_val = residual(reduce_memory=False)   # basic estimator: value = log-det estimate
    flow_mem = residual(reduce_memory=True)    # the speed benchmark's configuration
    flow_tr = residual(reduce_memory=False, exact_trace=True)

    x = torch.from_numpy(np.load(wd / "inputs.npz")["x"]).to(torch.float64)
    res = {}
    for i, (w, b, beta) in enumerate(effective_layers(net)):
        res[f"W{i}"], res[f"b{i}"], res[f"beta{i}"] = w.numpy(), b.numpy(), beta.numpy()

    flow_val.eval()
    with torch.no_grad():
        res["g"] = net(x.clone()).numpy()
    y, ld_flow = flow_val.inverse(x.clone())
    res["y"] = y.detach().numpy()
    xg = x.clone().requires_grad_(True)
    jac = batch_jacobian(net(xg), xg).detach()
    res["logdet_slogdet"] = torch.linalg.slogdet(torch.eye(d) + jac)[1].numpy()
    res["jac_norm"] = torch.linalg.matrix_norm(jac, ord=2).numpy()
    if d == 2:
        res["logdet_bruteforce"] = flow_val.iresblock._logdetgrad(x.clone())[1].detach().view(-1).numpy()
        res["logdet_flow"] = ld_flow.detach().numpy()
    flow_tr.eval()
    res["logdet_exact_trace"] = flow_tr.iresblock._logdetgrad(x.clone())[1].detach().view(-1).numpy()

    flow_val.train()
    draws = [flow_val.iresblock._logdetgrad(x.clone())[1].detach().view(-1).numpy() for _ in range(cfg["K"])]
    res["roulette"] = np.stack(draws)
    flow_mem.train()
    draws = [flow_mem.iresblock._logdetgrad(x.clone())[1].detach().view(-1).numpy()
             for _ in range(cfg["K_surrogate"])]
    res["surrogate"] = np.stack(draws)

    np.savez(wd / "peer.npz", **res)
    print(json.dumps({"peer": "normflows", "normflows": nf.__version__, "torch": torch.__version__,
                      "geom_p": float(torch.sigmoid(flow_val.iresblock.geom_p.detach())),
                      "n_layers": len(effective_layers(net))}))


if __name__ == "__main__":
    main()
