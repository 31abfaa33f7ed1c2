"""Cross-check against the peer `normflows` (PyTorch) on identical weights:
exact log-det and forward output to 1e-5, and Russian-roulette estimator statistics
within sampling error.

The peer script benchmarks/peers/normflows_crosscheck.py runs in the benchmark-only
environment (benchmarks/.venv-peers, torch CPU + normflows; see speed_toy.py's
docstring) as a subprocess. It builds one block
``nf.flows.Residual(nf.nets.LipschitzMLP([d, h, h, d], lipschitz_const=c, init_zeros=False))``
in float64 (raw weights made orthogonal and scaled up so that its power-iteration
rescaling binds and the Jacobian is not tiny; Swish betas jittered so that each layer's
differs), and exports the *effective* rescaled weights, biases and Swish betas; ours is
the same function written as a pure ``g(params, x)`` (LipSwish with ``softplus(beta)``
before each dense layer, including the first) with those matrices as they are (no
re-normalisation here). Exchange is via .npz/.json in a temporary directory.

Checked, float64 on both sides:
  * g(x) and y = x + g(x) (peer ``Residual.inverse``, which is the residual map when
    ``reverse=True``) against ours;
  * our ``residual_logdet(estimator="exact")`` against the peer's eval-mode brute force
    (``iResBlock._logdetgrad``, d = 2 only) and ``slogdet(I + J)`` with J from the
    peer's ``batch_jacobian`` (any d); the peer's ``exact_trace=True`` path is shown too
    (it still draws a roulette count, with 20 exact terms, so it is near-exact only);
  * roulette statistics on one batch: K independent draws per side, each draw one
    geometric count shared by the batch and one Gaussian probe per example. The peer
    draws come from train-mode ``_logdetgrad`` of ``Residual(reduce_memory=False)``
    (the basic estimator, whose value is the log-det estimate). Its count convention:
    ``np.random.geometric`` is on {1, 2, ...} and term ``n_exact + j`` is weighted by
    ``1 / P(N >= j)``, so term ``n_exact + 1`` is always evaluated with weight 1; ours
    draws N on {0, 1, ...}, so the peer's ``n_exact_terms = 2`` is the same law as our
    ``n_exact_terms = 3``. Both ours (3: matched law, 2: the nominal setting) are run;
    means must agree in either case (both unbiased), standard deviations only in the
    matched one. Reported: z of the difference of the means of the batch-mean
    estimator (two-sample), z of each side against the exact log-det, the largest
    per-example |z|, and the ratio of standard deviations with a bootstrap 95% CI.
  * the value the peer returns with ``reduce_memory=True`` in train mode (the speed
    benchmark's setting) is its Neumann-gradient surrogate, not a log-det estimate; its
    mean is listed against the exact value for information.

    python benchmarks/crosscheck_normflows.py [--K 2000] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from flowjax_res.ops import lipswish, residual_logdet  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
PEER_PY = HERE / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = HERE / "peers" / "normflows_crosscheck.py"
TOL = 1e-5


def g_fn(params, x):
    """LipSwish (beta = softplus(raw beta), as normflows' Swish) before each dense layer."""
    h = x
    for w, b, beta in params:
        h = lipswish(h, jax.nn.softplus(beta))
        h = h @ w.T + b
    return h


def run_peer(cfg: dict, x: np.ndarray) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as td:
        wd = pathlib.Path(td)
        (wd / "config.json").write_text(json.dumps(cfg))
        np.savez(wd / "inputs.npz", x=x)
        out = subprocess.run([str(PEER_PY), str(PEER_SCRIPT), "--workdir", str(wd)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"peer failed:\n{out.stderr}")
        meta = json.loads(out.stdout.strip().splitlines()[-1])
        with np.load(wd / "peer.npz") as z:
            res = {k: z[k] for k in z.files}
    return res, meta


def roulette_draws(params, x, K, n_exact, p, seed):
    def one(key):
        return residual_logdet(g_fn, params, x, key, estimator="roulette", dist="geometric", p=p,
                               n_exact_terms=n_exact, probe="gaussian", n_probes=1, share_terms=True)
    keys = jax.random.split(jax.random.key(seed), K)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def boot_std_ratio(a, b, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), (n_boot, len(a)))
    ib = rng.integers(0, len(b), (n_boot, len(b)))
    r = a[ia].std(axis=1, ddof=1) / b[ib].std(axis=1, ddof=1)
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def stats(draws, peer, exact):
    """Batch-mean estimator per draw; z-scores and std ratio against the peer draws."""
    K, Kp = draws.shape[0], peer.shape[0]
    a, b = draws.mean(axis=1), peer.mean(axis=1)
    se = np.sqrt(a.var(ddof=1) / K + b.var(ddof=1) / Kp)
    per_ex_se = np.sqrt(draws.var(axis=0, ddof=1) / K + peer.var(axis=0, ddof=1) / Kp)
    per_ex_z = (draws.mean(axis=0) - peer.mean(axis=0)) / per_ex_se
    lo, hi = boot_std_ratio(a, b)
    return dict(mean=float(a.mean()), se=float(a.std(ddof=1) / np.sqrt(K)), std=float(a.std(ddof=1)),
                z_vs_exact=float((a.mean() - exact.mean()) / (a.std(ddof=1) / np.sqrt(K))),
                z_vs_peer=float((a.mean() - b.mean()) / se), max_abs_z_per_example=float(np.abs(per_ex_z).max()),
                std_ratio=float(a.std(ddof=1) / b.std(ddof=1)), std_ratio_ci95=[lo, hi],
                per_example_std_ratio_median=float(np.median(draws.std(axis=0, ddof=1) / peer.std(axis=0, ddof=1))))


def crosscheck(d, args):
    rng = np.random.default_rng(args.seed + d)
    x = rng.normal(size=(args.batch, d)) * args.x_scale
    cfg = dict(seed=args.seed + d, d=d, hidden=args.hidden, coeff=args.coeff, power_iters=5, weight_scale=3.0,
               bias_scale=3.0, beta_jitter=0.5, orthogonal=True, n_exact_terms=args.n_exact, p=args.p, K=args.K,
               K_surrogate=args.K_surrogate, threads=args.threads)
    t0 = time.perf_counter()
    peer, meta = run_peer(cfg, x)
    peer_s = time.perf_counter() - t0
    params = [tuple(jnp.asarray(peer[f"{n}{i}"]) for n in ("W", "b", "beta")) for i in range(meta["n_layers"])]
    params = [(w, b, beta[0]) for w, b, beta in params]
    xj = jnp.asarray(x)
    g = np.asarray(g_fn(params, xj))
    ours_exact = np.asarray(residual_logdet(g_fn, params, xj, None, estimator="exact"))
    out = dict(d=d, hidden=args.hidden, coeff=args.coeff, batch=args.batch, K=args.K, peer_s=peer_s, peer=meta,
               jac_norm_max=float(peer["jac_norm"].max()), exact_logdet_batch_mean=float(ours_exact.mean()),
               dg_max=float(np.abs(g - peer["g"]).max()), dy_max=float(np.abs(x + g - peer["y"]).max()),
               dlogdet_slogdet_max=float(np.abs(ours_exact - peer["logdet_slogdet"]).max()),
               dlogdet_exact_trace_max=float(np.abs(ours_exact - peer["logdet_exact_trace"]).max()))
    if "logdet_bruteforce" in peer:
        out["dlogdet_bruteforce_max"] = float(np.abs(ours_exact - peer["logdet_bruteforce"]).max())
        out["dlogdet_flow_inverse_max"] = float(np.abs(ours_exact - peer["logdet_flow"]).max())
    checks = [out["dg_max"], out["dy_max"], out["dlogdet_slogdet_max"], out.get("dlogdet_bruteforce_max", 0.0)]
    out["exact_agree_1e-5"] = bool(max(checks) < TOL)

    t0 = time.perf_counter()
    est = {}
    for n_exact in (args.n_exact + 1, args.n_exact):
        draws = roulette_draws(params, xj, args.K, n_exact, args.p, args.seed + 100 * d + n_exact)
        est[f"ours n_exact={n_exact}" + (" (matched law)" if n_exact == args.n_exact + 1 else " (nominal)")] = \
            stats(draws, peer["roulette"], ours_exact)
    out["ours_roulette_s"] = time.perf_counter() - t0
    est[f"normflows n_exact={args.n_exact}"] = stats(peer["roulette"], peer["roulette"], ours_exact)
    sur = peer["surrogate"].mean(axis=1)
    est[f"normflows reduce_memory=True value (surrogate, K={len(sur)})"] = dict(
        mean=float(sur.mean()), se=float(sur.std(ddof=1) / np.sqrt(len(sur))), std=float(sur.std(ddof=1)),
        z_vs_exact=float((sur.mean() - ours_exact.mean()) / (sur.std(ddof=1) / np.sqrt(len(sur)))))
    jac = jax.vmap(jax.jacfwd(lambda v: g_fn(params, v[None])[0]))(xj)
    ref = float(jnp.mean(jnp.trace(jnp.linalg.solve((jnp.eye(d) + jac).mT, jac.mT).mT, axis1=1, axis2=2)))
    s = est[f"normflows reduce_memory=True value (surrogate, K={len(sur)})"]
    s["expected_surrogate_tr_J_inv_I_plus_J"] = ref
    s["z_vs_expected_surrogate"] = float((sur.mean() - ref) / s["se"])
    out["roulette"] = est
    return out


def fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", default="2,6")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--coeff", type=float, default=0.97)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--x-scale", type=float, default=2.0)
    ap.add_argument("--K", type=int, default=2000)
    ap.add_argument("--K-surrogate", type=int, default=500)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--n-exact", type=int, default=2, help="the peer's n_exact_terms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "crosscheck_normflows.json"))
    args = ap.parse_args()
    if not PEER_PY.exists():
        sys.exit(f"crosscheck_normflows: peer environment missing at {PEER_PY}; see speed_toy.py's docstring")

    rows = [crosscheck(int(d), args) for d in args.dims.split(",")]

    lines = ["| d | max ‖J‖ | max Δ g(x) | max Δ y | max Δ log-det vs slogdet | vs brute force | "
             "vs `Residual.inverse` | vs `exact_trace` (20+N terms) | ≤ 1e-5 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['d']} | {r['jac_norm_max']:.3f} | {r['dg_max']:.1e} | {r['dy_max']:.1e} "
                     f"| {r['dlogdet_slogdet_max']:.1e} | {fmt(r.get('dlogdet_bruteforce_max'), '.1e')} "
                     f"| {fmt(r.get('dlogdet_flow_inverse_max'), '.1e')} | {r['dlogdet_exact_trace_max']:.1e} "
                     f"| {'yes' if r['exact_agree_1e-5'] else '**no**'} |")
    lines += ["", "| d | estimator | batch-mean log-det (± SE) | exact | z vs exact | z vs normflows | "
              "max per-example \\|z\\| | std | std ratio ours/peer [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for name, s in r["roulette"].items():
            is_peer = name.startswith("normflows")
            ci = s.get("std_ratio_ci95")
            ratio = "—" if is_peer or ci is None else f"{s['std_ratio']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
            lines.append(
                f"| {r['d']} | {name} | {s['mean']:.5f} ± {s['se']:.5f} | {r['exact_logdet_batch_mean']:.5f} "
                f"| {s['z_vs_exact']:+.2f} | {'—' if is_peer else format(s['z_vs_peer'], '+.2f')} "
                f"| {'—' if is_peer else format(s['max_abs_z_per_example'], '.2f')} | {s['std']:.5f} "
                f"| {ratio} |")
    table = "\n".join(lines)
    print(table)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(), args=vars(args))
    pathlib.Path(args.out).write_text(json.dumps(dict(meta=meta, rows=rows, table=table), indent=2))


if __name__ == "__main__":
    main()
