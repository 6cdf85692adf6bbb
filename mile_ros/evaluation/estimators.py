"""What predicts p(nu=1|s) on every control tick, and the inputs it needs.

- `mile`: the checkpoint's intervention model, `MileModel.intervention_probability` on the
  observation the trainer builds (the state stacked over the model's `frame_stack` ticks, current
  first, episode start padded with the first state; image too when the model uses one). The
  probability is the model's closed form from its policy and its mental model of the robot
  (mile_ros.learning.mile).
- `majority`: the majority class of the training ticks, i.e. always "no intervention" when people
  intervene on fewer than half the ticks. For the probabilistic metrics (ROC-AUC, average
  precision, log-likelihood, Brier) it predicts the constant p = the training-set intervention rate
  (from --train-bags; without them, from the evaluation bags themselves, which flatters it; the
  report says which). As the hazard of a takeover onset it predicts the constant onset rate of the
  same ticks (onsets / robot-controlled ticks, mile_ros.evaluation.onsets).
- `classifier`: an MLP (2 x 64 ReLU, same stacked, standardised state; plain, NOT class-balanced
  binary cross-entropy so that its probabilities stay calibrated; Adam, deterministic seed, early
  stopping on 20% of the training episodes) trained on --train-bags (the earlier iterations).
  Skipped when no --train-bags are given.
- `oracle`, for simulated people: the true p(nu=1|s) of every tick, read from a JSON-lines file
  `{"stamp_ns": <tick stamp>, "p": <true p>}` matched to the ticks by their header stamp (the best
  any estimator can do on these ticks). The sim_human node does not record its p yet;
  bench/bench_eval_interventions.py collects with the benchmark's SimulatedPerson and writes this
  file.

Episodes are dicts: "state" [T, S], "nu" [T] bool, "name", "path", "stamps" and, for the MILE
model, "model_state" (+ "image") as the trainer builds them.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mile_ros.evaluation import EvalError
from mile_ros.evaluation.metrics import EPS
from mile_ros.learning.specs import FRAME_STACK, stack_frames

ESTIMATOR_NOTES = {  # report.json "notes", kept word for word
    "mile": "MILE intervention model of the checkpoint, p(nu=1|s) in closed form "
            "(mile_ros.learning.mile)",
    "majority": "always 'no intervention' (the majority class); probabilistic metrics use the "
                "constant p = the training-set intervention rate, onset metrics the constant "
                "training-set onset rate",
    "classifier": "MLP 2x64 ReLU on the stacked standardised state, unweighted (not "
                  "class-balanced) cross-entropy, trained on --train-bags",
    "oracle": "the simulated person's true p(nu=1|s) (from --true-p)",
}


# --- majority -------------------------------------------------------------------------------
class MajorityEstimator:
    """Predicts the training set's majority class; p = the training intervention rate.

    As an onset hazard: p = the training onset rate (`onset_rate`; the intervention rate without).
    """

    def __init__(self, rate: float, onset_rate: float | None = None):
        self.rate = float(rate)
        self.onset_rate = self.rate if onset_rate is None else float(onset_rate)

    def predict(self, episodes: Sequence[dict]) -> list[np.ndarray]:
        return [np.full(len(ep["nu"]), self.rate) for ep in episodes]

    def predict_onsets(self, episodes: Sequence[dict]) -> list[np.ndarray]:
        """Return the constant onset hazard on every tick of every episode."""
        return [np.full(len(ep["nu"]), self.onset_rate) for ep in episodes]


# --- neural classifier ----------------------------------------------------------------------
@dataclass
class ClassifierConfig:
    hidden: tuple = (64, 64)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    max_steps: int = 4000
    patience: int = 15          # epochs without validation improvement
    val_fraction: float = 0.2   # of the training episodes, for early stopping
    frame_stack: int = FRAME_STACK
    seed: int = 0


@dataclass
class NeuralClassifier:
    """MLP p(nu=1 | stacked state) fitted by unweighted binary cross-entropy."""

    config: ClassifierConfig
    net: object = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def _inputs(self, episodes) -> np.ndarray:
        return np.concatenate([stack_frames(ep["state"], self.config.frame_stack)
                               for ep in episodes]).astype(np.float32)

    def fit(self, episodes: Sequence[dict], progress: bool = False) -> "NeuralClassifier":
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        train, val = self._split(episodes)
        x = self._inputs(train)
        y = np.concatenate([ep["nu"] for ep in train]).astype(np.float32)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.net = self._build_net(x.shape[1], y)
        xt = torch.as_tensor((x - self.mean) / self.std)
        yt = torch.as_tensor(y)
        epochs, best = self._train(xt, yt, self._validation_tensors(val), progress)
        self.info = {"train_episodes": len(train), "val_episodes": len(val),
                     "train_ticks": int(len(x)), "epochs": epochs,
                     "val_log_loss": None if best == math.inf else best,
                     "class_balanced": False, "hidden": list(cfg.hidden), "seed": cfg.seed}
        return self

    def _split(self, episodes: Sequence[dict]) -> tuple[list, list]:
        """(training, validation) episodes, a seeded shuffle; no validation under 5 episodes."""
        cfg = self.config
        order = np.random.default_rng(cfg.seed).permutation(len(episodes))
        n_val = int(round(cfg.val_fraction * len(episodes))) if len(episodes) >= 5 else 0
        return [episodes[i] for i in order[n_val:]], [episodes[i] for i in order[:n_val]]

    def _build_net(self, width: int, y: np.ndarray):
        """Build the MLP, its output bias at the logit of the base rate.

        That bias is a sensible, calibrated prior.
        """
        import torch

        layers = []
        for h in self.config.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        with torch.no_grad():
            rate = float(np.clip(y.mean(), EPS, 1 - EPS))
            net[-1].bias.fill_(math.log(rate / (1 - rate)))
        return net

    def _validation_tensors(self, val: list):
        """(standardised inputs, labels) of the validation episodes; None without any."""
        import torch

        if not val:
            return None
        xv = torch.as_tensor((self._inputs(val) - self.mean) / self.std)
        yv = torch.as_tensor(np.concatenate([ep["nu"] for ep in val]).astype(np.float32))
        return xv, yv

    def _train(self, xt, yt, valid, progress: bool) -> tuple[int, float]:
        """Run Adam epochs with early stopping on `valid`, keeping the best validation weights.

        Returns (epochs run, best validation loss or inf).
        """
        import torch

        cfg = self.config
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(cfg.seed)
        steps_per_epoch = max(1, math.ceil(len(xt) / cfg.batch_size))
        epochs = max(1, min(cfg.max_epochs, cfg.max_steps // steps_per_epoch))
        best, best_state, stale, epoch = math.inf, None, 0, 0
        bar = _progress_bar(epochs) if progress else None
        for epoch in range(epochs):
            self._train_epoch(xt, yt, opt, loss_fn, gen)
            if bar:
                bar.update()
            if valid is None:
                continue
            v = self._loss(valid, loss_fn)
            if v < best - 1e-5:
                best, stale = v, 0
                best_state = {k: t.clone() for k, t in self.net.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if bar:
            bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return epoch + 1, best

    def _train_epoch(self, xt, yt, opt, loss_fn, gen) -> None:
        import torch

        self.net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for j in range(0, len(xt), self.config.batch_size):
            i = perm[j:j + self.config.batch_size]
            loss = loss_fn(self.net(xt[i]).squeeze(-1), yt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def _loss(self, valid, loss_fn) -> float:
        import torch

        xv, yv = valid
        self.net.eval()
        with torch.no_grad():
            return float(loss_fn(self.net(xv).squeeze(-1), yv))

    def predict(self, episodes: Sequence[dict]) -> list[np.ndarray]:
        import torch

        out = []
        with torch.no_grad():
            for ep in episodes:
                x = torch.as_tensor((stack_frames(ep["state"], self.config.frame_stack)
                                     .astype(np.float32) - self.mean) / self.std)
                out.append(torch.sigmoid(self.net(x).squeeze(-1)).numpy().astype(np.float64))
        return out


def _progress_bar(epochs: int):
    from tqdm import tqdm

    return tqdm(total=epochs, desc="training the classifier", unit="epoch")


# --- the MILE model -------------------------------------------------------------------------
def mile_predict(model, episodes: Sequence[dict], batch: int = 4096) -> list[np.ndarray]:
    """Return p(nu=1|s) of the model on every tick of every episode.

    From the observations the trainer builds: episode["model_state"] (the model's state dims; else
    "state") stacked over the model's frame_stack, plus episode["image"] for image models.
    """
    spec = model.obs_spec
    k = int(getattr(spec, "frame_stack", FRAME_STACK))
    uses_image = getattr(spec, "image_shape", None) is not None
    out = []
    for ep in episodes:
        obs = stack_frames(ep.get("model_state", ep["state"]), k).astype(np.float32)
        p = _mile_episode(model, ep, obs, uses_image, batch)
        if len(p) != len(obs) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
            raise EvalError(f"the model's intervention_probability gave invalid values on "
                            f"{ep.get('name', 'an episode')} "
                            f"(need one finite p in [0,1] per tick)")
        out.append(p)
    return out


def _mile_episode(model, ep: dict, obs: np.ndarray, uses_image: bool, batch: int) -> np.ndarray:
    """Return the model's p on one episode's stacked observations, `batch` ticks at a time."""
    parts = []
    for j in range(0, len(obs), batch):
        o = obs[j:j + batch]
        if uses_image:
            o = {"state": o, "image": ep["image"][j:j + batch]}
        parts.append(np.asarray(model.intervention_probability(o), dtype=np.float64).ravel())
    return np.concatenate(parts) if parts else np.zeros(0)


def load_model(path: str):
    from mile_ros.learning.checkpoint import load_checkpoint

    p = Path(path)
    if not p.exists():
        raise EvalError(f"--model {path}: no such checkpoint")
    try:
        return load_checkpoint(p)
    except ValueError as e:
        raise EvalError(f"--model {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file may fail in torch or pickle
        raise EvalError(f"--model {path}: cannot load the checkpoint: {type(e).__name__}: "
                        f"{str(e)[:300]}") from None


# --- inputs: episode bags and the truth -----------------------------------------------------
def _short_name(path: Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def load_bags(dirs: Sequence[str], argument: str, only: bool, images: bool) -> list:
    """EpisodeData of the bags under `dirs`; EvalError naming the argument and the bag."""
    from mile_ros.bags import BagError, load_episodes

    try:
        data, report = load_episodes([Path(d) for d in dirs], only=only, images=images,
                                     progress=sys.stderr.isatty())
    except BagError as e:
        raise EvalError(f"{argument}: {e}") from None
    if not data:
        raise EvalError(f"{argument} {' '.join(map(str, dirs))}: no usable episode bags "
                        f"(skipped: {report.get('skipped') or 'none'})")
    return data


def episode_dicts(data: Sequence, state_names: Sequence[str], argument: str,
                  model=None, source: str = "") -> list[dict]:
    """Build the episode dicts for the estimators.

    "state" (the bags' full observation vector, columns in the order `state_names`, for the
    classifier), "nu", "name", "path", "stamps" and, with a model, "model_state" (+ "image") built
    exactly as the trainer builds its observations.
    """
    out = []
    for ep in data:
        missing = [n for n in state_names if n not in ep.state_names]
        if missing or len(ep.state_names) != len(state_names):
            raise EvalError(f"{argument}: {ep.path} has state {list(ep.state_names)}, the other "
                            f"bags {list(state_names)}")
        index = [list(ep.state_names).index(n) for n in state_names]
        d = {"state": np.asarray(ep.state, float)[:, index], "nu": np.asarray(ep.nu, bool),
             "name": _short_name(ep.path), "path": str(ep.path), "stamps": ep.stamps}
        if model is not None:
            d.update(_model_arrays(ep, model, argument, source))
        out.append(d)
    return out


def _model_arrays(ep, model, argument: str, source: str) -> dict:
    """{"model_state"(, "image")} of an episode as the trainer builds the model's observations."""
    from mile_ros.learning.observations import episode_arrays

    try:
        arrays = episode_arrays(ep, model.obs_spec)
    except ValueError as e:
        want = list(getattr(model.obs_spec, "state_names", []))
        raise EvalError(f"{argument}: the bags do not match {source} (it expects state "
                        f"{want}, {len(want)} dims; the bags have {len(ep.state_names)}): "
                        f"{e}") from None
    out = {"model_state": arrays["state"]}
    if "image" in arrays:
        out["image"] = arrays["image"]
    return out


def read_true_p(path: Path, episodes: list[dict]) -> list[np.ndarray | None]:
    """Read per episode the true p of each tick from a JSON-lines file of {"stamp_ns", "p"}.

    Ticks missing from the file get NaN; an episode with none of its ticks there gets None.
    """
    table = _true_p_table(path)
    out, matched = [], 0
    for ep in episodes:
        p = np.array([table.get(int(s), np.nan) for s in ep["stamps"]])
        if np.isfinite(p).any() and (np.nanmin(p) < 0 or np.nanmax(p) > 1):
            raise EvalError(f"--true-p {path}: probabilities outside [0, 1]")
        matched += int(np.isfinite(p).sum())
        out.append(p if np.isfinite(p).any() else None)
    if matched == 0:
        raise EvalError(f"--true-p {path}: none of the {sum(len(e['nu']) for e in episodes)} "
                        "evaluation ticks' stamps appear in the file")
    return out


def _true_p_table(path: Path) -> dict[int, float]:
    """stamp_ns -> true p of the JSON-lines file."""
    if not path.is_file():
        raise EvalError(f"--true-p {path}: no such file")
    table: dict[int, float] = {}
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                table[int(row["stamp_ns"])] = float(row["p"])
            except (ValueError, KeyError, TypeError) as e:
                raise EvalError(f"--true-p {path}:{n}: expected a JSON object with 'stamp_ns' and "
                                f"'p' ({type(e).__name__}: {e})") from None
    return table
