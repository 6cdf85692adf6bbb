"""MILE's intervention model and losses (Korkmaz & Bıyık). Plain torch; no ROS.

p(nu=1|s) = E_{a~pi}[ Phi((E_{a'~pihat}[log pi(a|s) - log pi(a'|s)] - c) / beta) ]

Discrete actions: exact sums over the K classes. Gaussian actions pi = N(mu, sigma^2),
pihat = N(mu_h, sigma_h^2) (diagonal, D dims): the inner expectation is closed-form,
Delta(a) = 0.5 * (Kc - chi2) with Kc = sum_d (sigma_h^2 + (mu_h - mu)^2) / sigma^2 and
chi2 ~ chi-square(D), so with T = chi2 / 2 ~ Gamma(D/2, 1) and m = Kc / 2 - c

    p = E_T[ Phi((m - T) / beta) ] = P(T + beta * Z <= m),   Z ~ N(0, 1).

Two fixed 32-node quadratures evaluate this (measured against adaptive integration for
D = 1..7; max abs error below 1e-4 for every beta in [1e-4, 1e2], see tests):
  * beta >= 1: generalised Gauss-Laguerre (alpha = D/2 - 1) over T of Phi((m - T)/beta);
    converges geometrically because Phi is smooth on the scale of the Gamma density.
  * beta <  1: the integrand is nearly a step in T, which no fixed T-rule resolves, so the
    roles swap: p = Phi(z0) * E[P(D/2, m - beta Z) | Z < z0], z0 = m / beta, with
    Gauss-Legendre nodes on the truncated normal's quantiles (P = regularised incomplete
    gamma, the exact CDF of T). Exact in the limit beta -> 0.
Both are computed in float64 and in log space (log p and log(1 - p) separately), so the
losses stay finite for log-stds anywhere in [-20, 2].
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

QUAD_NODES = 32
_SWITCH_BETA = 1.0        # Laguerre rule at and above, truncated-normal rule below
_PROBIT_CLIP = 1e6        # probit arguments beyond this carry no information in float64
_LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
    "intervention_probability_discrete", "intervention_probability_gaussian",
    "log_intervention_probability_discrete", "log_intervention_probability_gaussian",
    "discrete_log_likelihood", "discrete_mile_loss", "gaussian_mile_loss",
    "gaussian_log_prob", "gaussian_nll", "monte_carlo_intervention_probability_gaussian",
    "estimate_c",
]


# ----------------------------------------------------------------------------- validation
def _tensor(name: str, x, ndim: int | None = None, allow_nan: bool = False) -> torch.Tensor:
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, np.ndarray)
                                else x)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a tensor or array of numbers ({e})") from None
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.is_floating_point() and not allow_nan and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _scalar(name: str, value, positive: bool = False) -> torch.Tensor | float:
    """C and beta: a Python number or a 0-d tensor (kept as a tensor so it can be learned)."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
        v = float(value.detach())
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return value.reshape(()) if torch.is_tensor(value) else v


def _same_shape(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    for n, t in zip(names[1:], tensors[1:]):
        if t.shape != tensors[0].shape:
            raise ValueError(f"{n} has shape {tuple(t.shape)} but {names[0]} has "
                             f"{tuple(tensors[0].shape)}")
    if tensors[0].shape[0] == 0 or tensors[0].shape[1] == 0:
        raise ValueError(f"{names[0]} is empty (shape {tuple(tensors[0].shape)})")


def _nu(nu, batch: int) -> torch.Tensor:
    nu = _tensor("nu", nu, ndim=1)
    if nu.shape[0] != batch:
        raise ValueError(f"nu has {nu.shape[0]} entries, expected {batch} (one per row)")
    if nu.dtype != torch.bool:
        if not bool(((nu == 0) | (nu == 1)).all()):
            raise ValueError("nu must be boolean (or 0/1)")
        nu = nu != 0
    return nu


def _form(form: str, allowed: tuple[str, ...]) -> str:
    if form not in allowed:
        raise ValueError(f"form must be one of {allowed}, got {form!r}")
    return form


def _lam(lam) -> float:
    lam = _scalar("lam", lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return lam


# ----------------------------------------------------------------------------- quadrature
@lru_cache(maxsize=None)
def _laguerre(dim: int, n: int = QUAD_NODES) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t and log-weights of E_{T~Gamma(dim/2,1)}[f(T)] ~ sum w f(t) (Golub-Welsch)."""
    alpha = dim / 2.0 - 1.0
    i = np.arange(n, dtype=np.float64)
    off = np.sqrt(i[1:] * (i[1:] + alpha))
    jacobi = np.diag(2 * i + alpha + 1) + np.diag(off, 1) + np.diag(off, -1)
    t, vec = np.linalg.eigh(jacobi)
    w = vec[0] ** 2
    w = np.maximum(w / w.sum(), 1e-300)
    return torch.from_numpy(t), torch.from_numpy(np.log(w))


@lru_cache(maxsize=None)
def _legendre01(n: int = QUAD_NODES) -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(0.5 * (x + 1.0)), torch.from_numpy(np.log(0.5 * w))


def _dwhere(cond: torch.Tensor, x: torch.Tensor, safe: float, f_true: Callable,
            f_false: Callable) -> torch.Tensor:
    """where(cond, f_true(x), f_false(x)) with each branch fed only inputs it handles.

    So no NaN/inf leaks into gradients through the branch not taken.
    """
    return torch.where(cond, f_true(torch.where(cond, x, safe)),
                       f_false(torch.where(cond, safe, x)))


def _log_gamma_cdf(a: float, y: torch.Tensor) -> torch.Tensor:
    """Log P(a, y) for y > 0 (series near 0, where P underflows)."""
    lg = math.lgamma(a + 1.0)

    def small(v):
        return (a * torch.log(v) - v - lg
                + torch.log1p(v / (a + 1) + v * v / ((a + 1) * (a + 2))))
    return _dwhere(y < 1e-3, y, 1e-4, small,
                   lambda v: torch.log(torch.special.gammainc(torch.full_like(v, a), v)))


def _log_gamma_sf(a: float, y: torch.Tensor) -> torch.Tensor:
    """Log Q(a, y) = log(1 - P(a, y)) for y > 0 (asymptotic series far out, where Q underflows)."""
    switch = 100.0 + 10.0 * a
    lg = math.lgamma(a)

    def large(v):
        b = a - 1.0
        series = 1 + b / v + b * (b - 1) / v ** 2 + b * (b - 1) * (b - 2) / v ** 3
        return b * torch.log(v) - v - lg + torch.log(series)
    return _dwhere(y > switch, y, 2 * switch, large,
                   lambda v: torch.log(torch.special.gammaincc(torch.full_like(v, a), v)))


def _log_p_both(m: torch.Tensor, beta, dim: int, select: torch.Tensor | None = None):
    """(log p, log(1-p)) for p = E_{T~Gamma(dim/2)}[Phi((m - T)/beta)]; m float64 [...].

    With a boolean `select`, only where(select, log p, log(1-p)) (half the work).
    """
    beta64 = beta.to(torch.float64) if torch.is_tensor(beta) else beta
    if float(beta.detach() if torch.is_tensor(beta) else beta) >= _SWITCH_BETA:
        t, logw = (x.to(m.device) for x in _laguerre(dim))
        u = ((m.unsqueeze(-1) - t) / beta64).clamp(-_PROBIT_CLIP, _PROBIT_CLIP)
        if select is not None:
            u = torch.where(select.unsqueeze(-1), u, -u)
            return torch.logsumexp(logw + torch.special.log_ndtr(u), -1)
        return (torch.logsumexp(logw + torch.special.log_ndtr(u), -1),
                torch.logsumexp(logw + torch.special.log_ndtr(-u), -1))
    a = dim / 2.0
    u01, logw = (x.to(m.device) for x in _legendre01())
    z0 = (m / beta64).clamp(-_PROBIT_CLIP, _PROBIT_CLIP)
    log_phi_z0, log_phi_mz0 = torch.special.log_ndtr(z0), torch.special.log_ndtr(-z0)
    # quantile nodes of Z | Z < z0 (z0 clipped so that Phi(z0) stays representable)
    z = torch.special.ndtri(
        u01 * torch.exp(torch.special.log_ndtr(z0.clamp(min=-35.0))).unsqueeze(-1))
    y = (m.unsqueeze(-1) - beta64 * z).clamp(min=1e-300)
    log_p = log_phi_z0 + torch.logsumexp(logw + _log_gamma_cdf(a, y), -1)
    log_q = torch.logaddexp(log_phi_mz0,
                            log_phi_z0 + torch.logsumexp(logw + _log_gamma_sf(a, y), -1))
    return (log_p, log_q) if select is None else torch.where(select, log_p, log_q)


def _kc(mu, log_std, mu_hat, log_std_hat) -> torch.Tensor:
    """Kc = sum_d (sigma_h^2 + (mu_h - mu)^2) / sigma^2.

    In float64 with the ratio of variances formed in log space.
    """
    mu, log_std, mu_hat, log_std_hat = (x.to(torch.float64)
                                        for x in (mu, log_std, mu_hat, log_std_hat))
    return (torch.exp(2 * (log_std_hat - log_std))
            + ((mu_hat - mu) * torch.exp(-log_std)) ** 2).sum(-1)


def _c64(c):
    return c.to(torch.float64) if torch.is_tensor(c) else c


def _gaussian_inputs(mu, log_std, mu_hat, log_std_hat):
    names = ("mu", "log_std", "mu_hat", "log_std_hat")
    ts = tuple(_tensor(n, x, ndim=2) for n, x in zip(names, (mu, log_std, mu_hat, log_std_hat)))
    _same_shape(names, ts)
    return ts


def log_intervention_probability_gaussian(mu, log_std, mu_hat, log_std_hat, c, beta=1.0):
    """(log p, log(1-p)) per row, float64 [B]; see `intervention_probability_gaussian`."""
    mu, log_std, mu_hat, log_std_hat = _gaussian_inputs(mu, log_std, mu_hat, log_std_hat)
    c, beta = _scalar("c", c), _scalar("beta", beta, positive=True)
    m = 0.5 * _kc(mu, log_std, mu_hat, log_std_hat) - _c64(c)
    return _log_p_both(m, beta, mu.shape[1])


def intervention_probability_gaussian(mu, log_std, mu_hat, log_std_hat, c, beta=1.0):
    """p(nu=1|s) per row for pi = N(mu, exp(log_std)^2), pihat = N(mu_hat, exp(log_std_hat)^2).

    Inputs [B, D]; exact closed form (chi-square quadrature), differentiable in all inputs and
    in c and beta (floats or 0-d tensors). Returns a tensor [B] in the dtype of mu.
    """
    log_p, _ = log_intervention_probability_gaussian(mu, log_std, mu_hat, log_std_hat, c, beta)
    return torch.exp(log_p).to(_tensor("mu", mu).dtype)


# ----------------------------------------------------------------------------- discrete
def _discrete_inputs(policy_logits, mental_logits):
    names = ("policy_logits", "mental_logits")
    ts = tuple(_tensor(n, x, ndim=2) for n, x in zip(names, (policy_logits, mental_logits)))
    _same_shape(names, ts)
    if ts[0].shape[1] < 2:
        raise ValueError(f"policy_logits needs at least 2 classes, got {ts[0].shape[1]}")
    return ts


def _discrete_terms(policy_logits, mental_logits, c, beta):
    """Log pi [B,K], per-class probit log Phi(u_a) and log Phi(-u_a) [B,K]."""
    policy_logits, mental_logits = _discrete_inputs(policy_logits, mental_logits)
    c, beta = _scalar("c", c), _scalar("beta", beta, positive=True)
    log_pi = F.log_softmax(policy_logits.to(torch.float64), -1)
    pihat = F.softmax(mental_logits.to(torch.float64), -1)
    delta = log_pi - (pihat * log_pi).sum(-1, keepdim=True)     # log-probabilities, not probs
    beta64 = beta.to(torch.float64) if torch.is_tensor(beta) else beta
    u = ((delta - _c64(c)) / beta64).clamp(-_PROBIT_CLIP, _PROBIT_CLIP)
    return log_pi, torch.special.log_ndtr(u), torch.special.log_ndtr(-u)


def log_intervention_probability_discrete(policy_logits, mental_logits, c, beta=1.0):
    """(log p, log(1-p)) per row, float64 [B]."""
    log_pi, log_phi, log_phi_neg = _discrete_terms(policy_logits, mental_logits, c, beta)
    return torch.logsumexp(log_pi + log_phi, -1), torch.logsumexp(log_pi + log_phi_neg, -1)


def intervention_probability_discrete(policy_logits, mental_logits, c, beta=1.0):
    """p(nu=1|s) = sum_a pi(a) Phi((Delta_a - c)/beta), Delta_a = log pi(a) - E_pihat[log pi].

    Logits [B, K] -> tensor [B].
    """
    log_p, _ = log_intervention_probability_discrete(policy_logits, mental_logits, c, beta)
    return torch.exp(log_p).to(policy_logits.dtype if torch.is_tensor(policy_logits)
                               else torch.float64)


def discrete_log_likelihood(policy_logits, mental_logits, a_h, nu, c, beta=1.0, form="eq3"):
    """Log-likelihood [B] of the (K+1)-class label (class a_h when nu, else "no intervention").

    form="eq3" (paper Eq. 3): P(a, nu=1) = pi(a) * p(nu=1|s);
    form="joint" (Eq. 1):     P(a, nu=1) = pi(a) * Phi((Delta_a - c)/beta).
    Both leave P(nu=0) = 1 - p(nu=1|s), so the K+1 classes sum to one.
    """
    _form(form, ("eq3", "joint"))
    log_pi, log_phi, log_phi_neg = _discrete_terms(policy_logits, mental_logits, c, beta)
    batch, k = log_pi.shape
    nu = _nu(nu, batch)
    a_h = _tensor("a_h", a_h, ndim=1)
    if a_h.shape[0] != batch:
        raise ValueError(f"a_h has {a_h.shape[0]} entries, expected {batch}")
    if a_h.is_floating_point():
        a_h = torch.where(nu, torch.nan_to_num(a_h, nan=0.0), 0.0)
        if not bool((a_h == a_h.round()).all()):
            raise ValueError("a_h must hold integer class indices")
        a_h = a_h.long()
    bad = nu & ((a_h < 0) | (a_h >= k))
    if bool(bad.any()):
        raise ValueError(f"a_h must be a class index in [0, {k}) where nu is true")
    idx = torch.where(nu, a_h, 0).unsqueeze(-1)
    log_no = torch.logsumexp(log_pi + log_phi_neg, -1)
    if form == "eq3":
        log_yes = log_pi.gather(-1, idx).squeeze(-1) + torch.logsumexp(log_pi + log_phi, -1)
    else:
        log_yes = (log_pi + log_phi).gather(-1, idx).squeeze(-1)
    return torch.where(nu, log_yes, log_no)


def discrete_mile_loss(policy_logits, mental_logits, a_h, nu, c, beta=1.0, form="eq3",
                       scored=None):
    """Mean negative log-likelihood of the (K+1)-class labels -> (loss, parts).

    `scored` (bool [B], default all): rows that are intervention decisions. An unscored row (a
    takeover's continuation, see `continuation_ticks`) contributes only log pi(a_h|s).
    """
    ll = discrete_log_likelihood(policy_logits, mental_logits, a_h, nu, c, beta, form)
    nu_b = _nu(nu, ll.shape[0])
    if scored is not None:
        idx = torch.where(nu_b, torch.nan_to_num(torch.as_tensor(a_h).double(), nan=0.0),
                          0.0).long().unsqueeze(-1)
        log_pi_a = torch.log_softmax(policy_logits.to(torch.float64), -1).gather(-1, idx)
        ll = torch.where(torch.as_tensor(scored, dtype=torch.bool), ll, log_pi_a.squeeze(-1))
    with torch.no_grad():
        log_p, _ = log_intervention_probability_discrete(policy_logits, mental_logits, c, beta)
    loss = (-ll.mean()).to(policy_logits.dtype)
    return loss, {"loss": float(loss.detach()), "p_mean": float(log_p.exp().mean()),
                  "rate": float(nu_b.double().mean())}


def continuation_ticks(nu, episode_start) -> np.ndarray:
    """Ticks that continue a takeover: nu[t] and nu[t-1] within the same episode.

    The temporal intervention model (MileConfig.intervention_model="segments") scores p(nu=1|s)
    only on the other ticks: those where the robot was in control when the person decided --
    onsets (the hazard fired), robot ticks (it did not) and handbacks (the first robot tick
    after a takeover, a fresh decision). A person who decides afresh every tick makes one-tick
    takeovers, which have no continuation ticks, so the model is then the paper's exactly.
    `episode_start`: bool [N], True on each episode's first tick.
    """
    nu = np.asarray(nu, bool)
    prev = np.r_[False, nu[:-1]] & ~np.asarray(episode_start, bool)
    return nu & prev


# ----------------------------------------------------------------------------- continuous
def gaussian_log_prob(mu, log_std, a) -> torch.Tensor:
    """Log N(a; mu, diag exp(log_std)^2), summed over the last dim."""
    z = (a - mu) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)


def gaussian_nll(mu, log_std, a, beta: float = 0.0) -> torch.Tensor:
    """Return the fitting loss -log N(a; mu, sigma^2), each dimension weighted by sg(sigma^2beta).

    beta-NLL (Seitzer et al., "On the pitfalls of heteroscedastic uncertainty estimation with
    probabilistic neural networks", ICLR 2022); sg = no gradient, summed over the last dim. Per
    dimension, with z = (a - mu) / sigma,

        d/dmu        = sg(sigma^2beta) (mu - a) / sigma^2 = (mu - a) / sigma^(2 (1 - beta))
        d/dlog_sigma = sg(sigma^2beta) (1 - z^2)          (zero at sigma = |a - mu|, as the NLL's)

    so sigma is still fitted to the residual, while the mean's step on a tick no longer grows as
    1 / sigma^2. beta = 0 is the plain NLL (the paper's); beta = 1 gives the mean the squared
    error's gradient. Why it matters: with the plain NLL a tick the mean already fits gets sigma
    at its floor and weight up to e^10 (networks.LOG_STD_BOUNDS), and the ticks it fits worst get
    a large sigma and almost no say on the mean. The value is the NLL times the weight; compare
    values across runs of one beta only.
    """
    z = (a - mu) * torch.exp(-log_std)
    nll = 0.5 * z * z + log_std + 0.5 * _LOG_2PI
    if beta:
        nll = nll * torch.exp((2.0 * float(beta)) * log_std).detach()
    return nll.sum(-1)


def gaussian_mile_loss(mu, log_std, mu_hat, log_std_hat, a_h, nu, c, beta=1.0, lam=0.5,
                       form="eq5", scored=None, nll_beta=0.0):
    """MILE loss for Gaussian policies -> (scalar loss, parts dict of floats).

    form="eq5" (paper Eq. 5): mean over the batch of
        lam * BCE(p(nu=1|s), nu) + (1 - lam) * nu * (-log pi(a_h|s)).
      The BCE part depends on pi and pihat; the NLL part on pi only.
    form="joint": mean of -log P(label), P(a_h, nu=1|s) = pi(a_h|s) Phi((Delta(a_h) - c)/beta),
      P(nu=0|s) = 1 - p(nu=1|s), with Delta(a_h) = 0.5 * (Kc - |(a_h - mu)/sigma|^2); lam unused.
    a_h [B, D] is ignored (may be NaN) where nu is false. a_h is scored under N(mu, sigma).
    `scored` (bool [B], default all): rows that are intervention decisions; the intervention
    term of an unscored row (a takeover's continuation, `continuation_ticks`) is left out, its
    -log pi(a_h|s) is kept (weight 1 - lam for eq5, 1 for joint). `nll_beta`: the -log pi(a_h|s)
    term of either form is `gaussian_nll`'s beta-NLL (0: the plain NLL; parts["nll"] is always
    the plain one).
    """
    _form(form, ("eq5", "joint"))
    lam = _lam(lam)
    mu, log_std, mu_hat, log_std_hat = _gaussian_inputs(mu, log_std, mu_hat, log_std_hat)
    c, beta = _scalar("c", c), _scalar("beta", beta, positive=True)
    batch = mu.shape[0]
    nu = _nu(nu, batch)
    a_h = _tensor("a_h", a_h, ndim=2, allow_nan=True)
    if a_h.shape != mu.shape:
        raise ValueError(f"a_h has shape {tuple(a_h.shape)}, expected {tuple(mu.shape)}")
    if not bool(torch.isfinite(a_h[nu]).all()):
        raise ValueError("a_h contains NaN or inf on rows where nu is true")
    a_h = torch.where(nu.unsqueeze(-1), a_h, 0.0).to(mu.dtype)   # masked rows: finite filler

    m = 0.5 * _kc(mu, log_std, mu_hat, log_std_hat) - _c64(c)
    nll = -gaussian_log_prob(mu, log_std, a_h).to(torch.float64)
    fit_nll = gaussian_nll(mu, log_std, a_h, nll_beta).to(torch.float64) if nll_beta else nll
    nuf = nu.to(torch.float64)
    if form == "eq5":
        bce = -_log_p_both(m, beta, mu.shape[1], select=nu)      # log p or log(1-p) per row
        if scored is not None:
            bce = torch.where(torch.as_tensor(scored, dtype=torch.bool), bce, 0.0)
        per_row = lam * bce + (1.0 - lam) * nuf * fit_nll
    else:
        mu64, ls64, muh64, lsh64, a64 = (x.to(torch.float64) for x in (mu, log_std, mu_hat,
                                                                       log_std_hat, a_h))
        # Kc - |z_h|^2 without cancellation:
        # (mu_h - mu)^2 - (a - mu)^2 = (mu_h - a)(mu_h + a - 2mu)
        delta = 0.5 * ((torch.exp(2 * (lsh64 - ls64))
                        + (muh64 - a64) * (muh64 + a64 - 2 * mu64) * torch.exp(-2 * ls64)).sum(-1))
        beta64 = beta.to(torch.float64) if torch.is_tensor(beta) else beta
        u = ((delta - _c64(c)) / beta64).clamp(-_PROBIT_CLIP, _PROBIT_CLIP)
        log_q = _log_p_both(m, beta, mu.shape[1], select=torch.zeros_like(nu))
        bce = -torch.where(nu, torch.special.log_ndtr(u), log_q)
        if scored is not None:
            bce = torch.where(torch.as_tensor(scored, dtype=torch.bool), bce, 0.0)
        per_row = torch.where(nu, fit_nll, 0.0) + bce
    loss = per_row.mean().to(mu.dtype)
    n_int = int(nu.sum())
    parts = {"loss": float(loss.detach()), "bce": float(bce.detach().mean()),
             "nll": float((nll.detach() * nuf).sum() / max(n_int, 1)),
             "rate": n_int / batch}
    return loss, parts


def monte_carlo_intervention_probability_gaussian(mu, log_std, mu_hat, log_std_hat, c, beta=1.0,
                                                  n_samples=1000, generator=None,
                                                  inner_samples=None, antithetic=False,
                                                  chunk=50000):
    """Estimate p(nu=1|s) by sampling, in the style of public MILE code.

    inner_samples (default n_samples) a' ~ pihat estimate E_pihat[log pi(a')], n_samples a ~ pi
    (reparameterised) average Phi((log pi(a) - E_pihat[log pi] - c)/beta). Test oracle and
    benchmark baseline only. The inner estimate's error is shared by every outer sample, so
    an oracle needs many more inner than outer samples; antithetic=True pairs the inner draws
    (z, -z), which removes the error of its linear term (oracle use, not the public style).
    """
    mu, log_std, mu_hat, log_std_hat = _gaussian_inputs(mu, log_std, mu_hat, log_std_hat)
    c, beta = _scalar("c", c), _scalar("beta", beta, positive=True)
    n_samples = int(n_samples)
    inner_samples = n_samples if inner_samples is None else int(inner_samples)
    if n_samples < 1 or inner_samples < 1:
        raise ValueError("n_samples and inner_samples must be >= 1, "
                         f"got {n_samples}, {inner_samples}")
    std, std_hat = log_std.exp(), log_std_hat.exp()

    def draws(n):
        return torch.randn((n,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device,
                           generator=generator)
    inner = 0.0
    for start in range(0, inner_samples, chunk):
        n = min(chunk, inner_samples - start)
        z = draws(n)
        inner = inner + gaussian_log_prob(mu, log_std, mu_hat + std_hat * z).sum(0)
        if antithetic:
            inner = inner + gaussian_log_prob(mu, log_std, mu_hat - std_hat * z).sum(0)
    if antithetic:
        inner = inner / 2
    inner = inner / inner_samples
    total = 0.0
    for start in range(0, n_samples, chunk):
        n = min(chunk, n_samples - start)
        a = mu + std * draws(n)
        total = total + torch.special.ndtr((gaussian_log_prob(mu, log_std, a) - inner - c)
                                           / beta).sum(0)
    return total / n_samples


def estimate_c(rate, *, mu=None, log_std=None, mu_hat=None, log_std_hat=None,
               policy_logits=None, mental_logits=None, probability_fn=None, beta=1.0,
               c_hint=None, tol=1e-7) -> float:
    """Find the cost c at which the mean predicted p(nu=1|s) over the given states equals `rate`.

    By bisection (p is decreasing in c). Give Gaussian parameters, or logits, or a function
    c -> array of probabilities. `c_hint` (e.g. the previous estimate) speeds up the search.
    """
    rate = _scalar("rate", rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    beta = _scalar("beta", beta, positive=True)
    if probability_fn is None:
        if mu is not None:
            args = tuple(torch.as_tensor(x).detach() for x in (mu, log_std, mu_hat, log_std_hat))

            def probability_fn(c):
                return intervention_probability_gaussian(*args, c, beta)
        elif policy_logits is not None and mental_logits is not None:
            args = (torch.as_tensor(policy_logits).detach(),
                    torch.as_tensor(mental_logits).detach())

            def probability_fn(c):
                return intervention_probability_discrete(*args, c, beta)
        else:
            raise ValueError("estimate_c needs mu/log_std/mu_hat/log_std_hat, or "
                             "policy_logits/mental_logits, or probability_fn")

    def excess(c):
        with torch.no_grad():
            return float(np.mean(np.asarray(probability_fn(c), dtype=np.float64))) - rate
    # bracket [lo, hi] with excess(lo) >= 0 >= excess(hi), growing steps from the hint
    center = 0.0 if c_hint is None else float(c_hint)
    lo, hi, step = center - 1.0, center + 1.0, 1.0
    f_lo, f_hi = excess(lo), excess(hi)
    while f_lo < 0 or f_hi > 0:
        step *= 2.0
        if step > 1e12:
            raise ValueError(f"no finite c gives intervention rate {rate}")
        if f_lo < 0:
            lo, f_lo = lo - step, excess(lo - step)
        if f_hi > 0:
            hi, f_hi = hi + step, excess(hi + step)
    # Illinois false position: superlinear, never leaves the bracket
    side = 0
    for _ in range(200):
        if hi - lo <= tol * max(1.0, abs(lo), abs(hi)):
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo) if f_lo != f_hi else 0.5 * (lo + hi)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        f_mid = excess(mid)
        if f_mid == 0:
            return mid
        if f_mid > 0:
            lo, f_lo = mid, f_mid
            if side == 1:
                f_hi *= 0.5
            side = 1
        else:
            hi, f_hi = mid, f_mid
            if side == -1:
                f_lo *= 0.5
            side = -1
        if abs(f_mid) < 1e-9:
            return mid
    return 0.5 * (lo + hi)
