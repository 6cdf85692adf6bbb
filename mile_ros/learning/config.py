"""MileConfig: every training setting of MILE and BC in one place, with its default."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mile_ros.learning.networks import DEFAULT_IMAGE_ENCODER, IMAGE_ENCODERS, LOG_STD_BOUNDS
from mile_ros.learning.specs import ActionSpec


@dataclass
class MileConfig:
    c: float | None = None          # intervention cost; None = estimate from the data
    c_update: str = "learn"  # with c=None: "learn" | "rate" | "fixed" (mile_training docstring)
    beta: float = 1.0               # probit scale (the initial value with beta_update="learn")
    beta_update: str = "fixed"      # "fixed" | "learn" (log beta learned with c, at c_lr)
    lam: float = 0.5                # Eq. 5 weight of the BCE term
    # "per_tick" (the paper) | "segments" (p scored only where the robot was in control;
    # mile_training)
    intervention_model: str = "per_tick"
    form: str | None = None  # continuous "eq5"|"joint", discrete "eq3"|"joint"; None = eq5/eq3
    hidden: tuple = (256, 256)
    image_encoder: str = DEFAULT_IMAGE_ENCODER  # image networks: "patch" | "conv3" (networks.py)
    lr: float = 3e-4
    c_lr: float = 3e-2
    batch_size: int = 256
    epochs: float = 30.0            # nominal passes over the data (bounded by the two below)
    min_updates: int = 500
    max_updates: int = 20000
    eval_every: int | None = None   # updates between validations; None = budget // 40
    patience: int = 8               # evaluations without improvement before stopping
    holdout: float = 0.2            # fraction of tick blocks used only to pick the update count
    holdout_block: int = 25         # ticks per held-out block
    refit: bool = True              # refit on all data (True) or keep the best held-out weights
    train_mental: bool = True
    mental_anchor: float = 0.1  # weight of a BC term tying pihat to the robot's a_r (0 = paper)
    # weight of a BC term tying pi to the robot's a_r on ticks nobody intervened on (0 = paper).
    # The paper's no-intervention term only keeps pi within the person's tolerance of pihat;
    # with a tolerant person the mean drifts inside it (the WidowX demo, seed 0: 0.1-0.3 per
    # action dimension, every grasp lost). `mile-ros demo` sets 0.1 (README "The demo"); the
    # trainer and the benchmark keep the paper's loss
    policy_anchor: float = 0.0
    # beta-NLL (mile.gaussian_nll) for every Gaussian fitting term: BC, MILE's -log pi(a_h|s),
    # the anchors. 0 = the plain NLL (the paper's); `mile-ros demo` sets 0.5 (README "The demo")
    nll_beta: float = 0.0
    pretrain_updates: int = 300     # BC on a_r for both networks when there is no `init`
    grad_clip: float = 10.0
    weight_decay: float = 0.0
    # decay of an exponential moving average of the networks' weights over the updates; the fit
    # ends with the average (0 = off: the last update's weights, the paper's). loop._Loop
    ema: float = 0.0
    log_std_bounds: tuple = LOG_STD_BOUNDS
    seed: int = 0

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.log_std_bounds = tuple(float(v) for v in self.log_std_bounds)

    def validate(self, action_spec: ActionSpec | None = None) -> "MileConfig":
        def bad(name, why):
            raise ValueError(f"MileConfig.{name} {why}, got {getattr(self, name)!r}")
        for name in ("train_mental", "refit"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be True or False")
        for name in ("batch_size", "min_updates", "max_updates", "patience", "holdout_block",
                     "pretrain_updates", "seed") + (("eval_every",) if self.eval_every else ()):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                bad(name, "must be an integer")
        if self.c is not None and not (isinstance(self.c, (int, float)) and math.isfinite(self.c)):
            bad("c", "must be a finite number or None")
        if self.c_update not in ("learn", "rate", "fixed"):
            bad("c_update", "must be 'learn', 'rate' or 'fixed'")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta)
                and self.beta > 0):
            bad("beta", "must be > 0")
        if self.beta_update not in ("fixed", "learn"):
            bad("beta_update", "must be 'fixed' or 'learn'")
        if self.intervention_model not in ("per_tick", "segments"):
            bad("intervention_model", "must be 'per_tick' or 'segments'")
        if self.image_encoder not in IMAGE_ENCODERS:
            bad("image_encoder", f"must be one of {IMAGE_ENCODERS}")
        if not 0.0 <= self.lam <= 1.0:
            bad("lam", "must be in [0, 1]")
        if not (isinstance(self.nll_beta, (int, float)) and 0.0 <= self.nll_beta <= 1.0):
            bad("nll_beta", "must be in [0, 1]")
        allowed = (None, "eq5", "joint") if action_spec is None or action_spec.continuous \
            else (None, "eq3", "joint")
        if self.form not in allowed:
            bad("form", f"must be one of {allowed}")
        for name in ("lr", "c_lr", "epochs", "grad_clip"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        for name in ("batch_size", "min_updates", "max_updates", "patience", "holdout_block"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be >= 1")
        if self.min_updates > self.max_updates:
            bad("min_updates", "must be <= max_updates")
        if self.eval_every is not None and int(self.eval_every) < 1:
            bad("eval_every", "must be >= 1 or None")
        if not 0.0 <= self.holdout < 0.9:
            bad("holdout", "must be in [0, 0.9)")
        if not (isinstance(self.ema, (int, float)) and 0.0 <= self.ema < 1.0):
            bad("ema", "must be in [0, 1)")
        for name in ("pretrain_updates", "weight_decay", "mental_anchor", "policy_anchor"):
            if not getattr(self, name) >= 0:
                bad(name, "must be >= 0")
        return self

    def resolved_form(self, action_spec: ActionSpec) -> str:
        return self.form or ("eq5" if action_spec.continuous else "eq3")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["log_std_bounds"] = list(self.hidden), list(self.log_std_bounds)
        return d

    @classmethod
    def with_settings(cls, settings: dict, where: str = "settings", **fixed) -> "MileConfig":
        """Build and validate a config from {name: value}; a bad name or value names `where`."""
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(settings) - known)
        if bad:
            raise ValueError(f"{where}: unknown MileConfig field(s) {', '.join(bad)}; "
                             f"valid: {', '.join(sorted(known))}")
        try:
            return cls(**{**settings, **fixed}).validate()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_dict(cls, d: dict) -> "MileConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_settings(items, option: str = "--set", exclude=()) -> dict:
    """`NAME=VALUE` items -> {name: value}, values read as YAML (1e-3, true, null, [256, 256]).

    A malformed item, or a NAME that is not a MileConfig field (or is in `exclude`), raises a
    ValueError naming `option`.
    """
    import yaml

    known = {f.name for f in dataclasses.fields(MileConfig)} - set(exclude)
    out = {}
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"{option} {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(known))}")
        try:
            out[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"{option} {item!r}: cannot read the value {text!r}") from None
    return out
