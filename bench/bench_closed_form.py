"""Closed-form MILE loss vs a 1000-sample Monte-Carlo estimator of the same loss.

The Monte-Carlo estimator follows public MILE code: per state, 1000 reparameterised draws from
the mental model estimate E_pihat[log pi(a')], 1000 draws from the policy average
Phi((log pi(a) - E_pihat[log pi] - c)/beta); the BCE uses that estimate, clamped away from 0/1.
Both run on the same data, the same networks (same initial weights), the same seed and the same
Eq. 5 loss; only p(nu=1|s) differs. Reported side by side from one run:
  * seconds per training epoch (Adam, full pass over the data), median over epochs;
  * spread of the loss and of the gradient over repeated evaluations at fixed weights
    (the closed form is deterministic, so its spread is floating-point noise only);
  * the Monte-Carlo estimate's mean error against the closed form (its bias).

    python bench/bench_closed_form.py [--ticks 4096] [--epochs 3] [--repeats 20] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mile_ros.learning import mile  # noqa: E402
from mile_ros.learning.networks import GaussianPolicy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "closed_form.json"


def make_data(ticks: int, obs_dim: int, act_dim: int, seed: int):
    """Simulated-person data: linear-tanh expert and mental model, probit interventions."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(ticks, obs_dim, generator=g)
    w_e = torch.randn(obs_dim, act_dim, generator=g) / math.sqrt(obs_dim)
    w_m = w_e + 0.7 * torch.randn(obs_dim, act_dim, generator=g) / math.sqrt(obs_dim)
    mu_e, mu_m = torch.tanh(obs @ w_e), torch.tanh(obs @ w_m)
    ls_e, ls_m = torch.full_like(mu_e, math.log(0.1)), torch.full_like(mu_m, math.log(0.3))
    c = mile.estimate_c(0.2, mu=mu_e, log_std=ls_e, mu_hat=mu_m, log_std_hat=ls_m)
    p = mile.intervention_probability_gaussian(mu_e, ls_e, mu_m, ls_m, c)
    nu = torch.rand(ticks, generator=g) < p
    a_h = (mu_e + 0.1 * torch.randn(ticks, act_dim, generator=g)).clamp(-1, 1)
    return obs, torch.where(nu[:, None], a_h, float("nan")), nu


def _eq5(p_log, q_log, mu, ls, a_h, nu, lam):
    bce = -torch.where(nu, p_log, q_log)
    nll = -mile.gaussian_log_prob(mu, ls, torch.where(nu[:, None], a_h, 0.0))
    return (lam * bce + (1 - lam) * nu.float() * nll).mean()


def closed_form(policy, mental, obs, a_h, nu, c, beta, lam, samples):
    """mile_ros: one forward per network, exact p(nu=1|s)."""
    mu, ls = policy(obs)
    muh, lsh = mental(obs)
    return mile.gaussian_mile_loss(mu, ls, muh, lsh, a_h, nu, c, beta, lam)[0]


def mc_public(policy, mental, obs, a_h, nu, c, beta, lam, samples, eps=1e-6):
    """Estimate p the public code's way, with torch.distributions.

    rsample `samples` actions from the mental model and from the policy (each sampling call
    runs that network's forward again), average the probit of the sampled log-ratio, clamp p
    for the logs.
    """
    muh, lsh = mental(obs)                                   # monte_carlo_samples(mental)
    a_hat = torch.distributions.Normal(muh, lsh.exp()).rsample((samples,))
    mu, ls = policy(obs)                                     # the policy distribution
    dist = torch.distributions.Normal(mu, ls.exp())
    inner = dist.log_prob(a_hat).sum(-1).mean(0)
    mu2, ls2 = policy(obs)                                   # monte_carlo_samples(policy)
    a = torch.distributions.Normal(mu2, ls2.exp()).rsample((samples,))
    inside = dist.log_prob(a).sum(-1) - inner - c
    p = torch.distributions.Normal(0.0, beta).cdf(inside).mean(0).clamp(eps, 1 - eps)
    return _eq5(torch.log(p), torch.log1p(-p), mu, ls, a_h, nu, lam)


def mc_lean(policy, mental, obs, a_h, nu, c, beta, lam, samples, eps=1e-6):
    """Form the same sampling estimate without the extra forward pass or distribution objects."""
    mu, ls = policy(obs)
    muh, lsh = mental(obs)
    p = mile.monte_carlo_intervention_probability_gaussian(mu, ls, muh, lsh, c, beta,
                                                           n_samples=samples).clamp(eps, 1 - eps)
    return _eq5(torch.log(p), torch.log1p(-p), mu, ls, a_h, nu, lam)


ESTIMATORS = {"closed_form": closed_form, "mc_public": mc_public, "mc_lean": mc_lean}


def nets(obs_dim, act_dim, hidden, seed):
    torch.manual_seed(seed)
    return GaussianPolicy(obs_dim, act_dim, hidden), GaussianPolicy(obs_dim, act_dim, hidden)


def one_epoch(loss_fn, data, args, hidden, state):
    """One Adam pass over the data; `state` carries each estimator's networks between epochs."""
    obs, a_h, nu = data
    if state is None:
        policy, mental = nets(obs.shape[1], a_h.shape[1], hidden, args.seed)
        opt = torch.optim.Adam(list(policy.parameters()) + list(mental.parameters()), lr=3e-4)
        state = (policy, mental, opt, torch.Generator().manual_seed(args.seed))
    policy, mental, opt, gen = state
    perm = torch.randperm(obs.shape[0], generator=gen)
    t0 = time.perf_counter()
    total = 0.0
    for s in range(0, len(perm), args.batch):
        idx = perm[s:s + args.batch]
        loss = loss_fn(policy, mental, obs[idx], a_h[idx], nu[idx], args.c, args.beta, 0.5,
                       args.samples)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return time.perf_counter() - t0, total / len(perm), state


def spread(loss_fn, data, args, hidden):
    """Loss and gradient over repeated evaluations on one batch at fixed weights."""
    obs, a_h, nu = (x[:args.batch] for x in data)
    policy, mental = nets(obs.shape[1], a_h.shape[1], hidden, args.seed)
    params = list(policy.parameters()) + list(mental.parameters())
    losses, grads = [], []
    for r in range(args.repeats):
        torch.manual_seed(1000 + r)
        loss = loss_fn(policy, mental, obs, a_h, nu, args.c, args.beta, 0.5, args.samples)
        g = torch.autograd.grad(loss, params)
        losses.append(float(loss.detach()))
        grads.append(torch.cat([x.reshape(-1) for x in g]).double())
    grads = torch.stack(grads)
    mean_grad = grads.mean(0)
    return {"loss_mean": statistics.fmean(losses), "loss_std": statistics.pstdev(losses),
            # trace of the gradient covariance, and relative to the squared mean gradient
            "grad_total_variance": float(grads.var(0, unbiased=False).sum()),
            "grad_relative_variance": float(grads.var(0, unbiased=False).sum()
                                            / mean_grad.pow(2).sum()),
            "grad_mean_norm": float(mean_grad.norm())}


def loss_only_ms(loss_fn, data, args, hidden, reps=10):
    """Forward + backward of the loss alone, given fixed network outputs (no network cost)."""
    obs, a_h, nu = (x[:args.batch] for x in data)
    policy, mental = nets(obs.shape[1], a_h.shape[1], hidden, args.seed)
    with torch.no_grad():
        outs = (policy(obs), mental(obs))
    fixed = lambda o: tuple(x.clone().requires_grad_() for x in o)        # noqa: E731
    times = []
    for r in range(reps + 2):
        p_out, m_out = fixed(outs[0]), fixed(outs[1])
        torch.manual_seed(r)
        t0 = time.perf_counter()
        loss = loss_fn(lambda _: p_out, lambda _: m_out, obs, a_h, nu, args.c, args.beta, 0.5,
                       args.samples)
        loss.backward()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[2:])


def run_config(data, args, hidden):
    state = dict.fromkeys(ESTIMATORS)
    times = {k: [] for k in ESTIMATORS}
    losses = {k: [] for k in ESTIMATORS}
    for _ in range(args.epochs):          # interleaved, so machine load hits all alike
        for name, fn in ESTIMATORS.items():
            t, epoch_loss, state[name] = one_epoch(fn, data, args, hidden, state[name])
            times[name].append(t)
            losses[name].append(epoch_loss)
    out = {}
    for name, fn in ESTIMATORS.items():
        out[name] = {"epoch_s": times[name], "epoch_s_median": statistics.median(times[name]),
                     "epoch_loss": losses[name],
                     "loss_only_ms": loss_only_ms(fn, data, args, hidden),
                     "spread": spread(fn, data, args, hidden)}
    cf = out["closed_form"]
    for name in ("mc_public", "mc_lean"):
        out[name]["speedup_per_epoch"] = out[name]["epoch_s_median"] / cf["epoch_s_median"]
        out[name]["speedup_loss_only"] = out[name]["loss_only_ms"] / cf["loss_only_ms"]
        out[name]["loss_bias_vs_closed_form"] = (out[name]["spread"]["loss_mean"]
                                                 - cf["spread"]["loss_mean"])
    return out


def report(hidden, out):
    cols = list(ESTIMATORS)
    print(f"\nnetworks: MLP {hidden} (policy and mental model)")
    print(f"{'':30s}" + "".join(f"{c:>14s}" for c in cols))
    rows = [("epoch time, s (median)", lambda o: f"{o['epoch_s_median']:14.3f}"),
            ("loss fwd+bwd only, ms", lambda o: f"{o['loss_only_ms']:14.2f}"),
            ("loss at fixed weights", lambda o: f"{o['spread']['loss_mean']:14.5f}"),
            ("loss std over repeats", lambda o: f"{o['spread']['loss_std']:14.2e}"),
            ("grad variance (trace)", lambda o: f"{o['spread']['grad_total_variance']:14.2e}"),
            ("grad var / |mean grad|^2",
             lambda o: f"{o['spread']['grad_relative_variance']:14.2e}")]
    for label, f in rows:
        print(f"{label:30s}" + "".join(f(out[c]) for c in cols))
    for name in ("mc_public", "mc_lean"):
        print(f"closed form vs {name:9s}: "
              f"{out[name]['speedup_per_epoch']:5.1f}x faster per epoch, "
              f"{out[name]['speedup_loss_only']:6.1f}x on the loss alone")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=4096)
    ap.add_argument("--obs-dim", type=int, default=39 * 4,
                    help="Meta-World state x 4 stacked frames")
    ap.add_argument("--act-dim", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--also-hidden", type=int, nargs="*", default=[64, 64],
                    help="a second network size measured in the same run (empty: none)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--c", type=float, default=None, help="default: rate-matched at the start")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.ticks, args.epochs, args.repeats = 512, 1, 4
    torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(True)   # torch's default
    data = make_data(args.ticks, args.obs_dim, args.act_dim, args.seed)
    if args.c is None:   # the rate-matching c of the untrained networks, as the trainer starts
        policy, mental = nets(args.obs_dim, args.act_dim, args.hidden, args.seed)
        with torch.no_grad():
            (mu, ls), (muh, lsh) = policy(data[0]), mental(data[0])
        args.c = mile.estimate_c(float(data[2].float().mean()), mu=mu, log_std=ls, mu_hat=muh,
                                 log_std_hat=lsh, beta=args.beta)
    configs = [args.hidden] + ([args.also_hidden] if args.also_hidden else [])
    results = {}
    for hidden in configs:
        out = run_config(data, args, hidden)
        report(hidden, out)
        results["x".join(map(str, hidden))] = out
    main_out = results["x".join(map(str, args.hidden))]
    cf, pub = main_out["closed_form"], main_out["mc_public"]
    result = {
        "what": "seconds per MILE training epoch, and loss/gradient spread at fixed weights: "
                f"closed form vs {args.samples}-sample Monte Carlo of the same Eq. 5 loss "
                "(mc_public: the public code's way; mc_lean: same estimate, no extra forward)",
        "command": "python bench/bench_closed_form.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"ticks": args.ticks, "obs_dim": args.obs_dim, "act_dim": args.act_dim,
                   "batch": args.batch, "epochs": args.epochs, "repeats": args.repeats,
                   "beta": args.beta, "c": args.c, "samples": args.samples, "seed": args.seed,
                   "threads": args.threads, "quadrature_nodes": mile.QUAD_NODES},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__,
                    "python": platform.python_version()},
        "results": results,
        "target": ">= 20x faster per epoch than the public-style estimator, no higher variance",
        "speedup_per_epoch": pub["speedup_per_epoch"],
    }
    result["meets_target"] = bool(pub["speedup_per_epoch"] >= 20
                                  and cf["spread"]["loss_std"] <= pub["spread"]["loss_std"]
                                  and cf["spread"]["grad_total_variance"]
                                  <= pub["spread"]["grad_total_variance"])
    print(f"\ntarget met ({result['target']}, networks {args.hidden}): {result['meets_target']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
