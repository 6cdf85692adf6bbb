"""The ROS-free learning core (plain torch/numpy, usable from a notebook).

- `mile`: MILE's intervention model and losses (closed forms, derivations in its docstring).
- `networks`: the policy / mental-model networks (Gaussian, categorical, optional image encoder).
- `specs`: observation and action specs, the normaliser, THE frame-stacking rule (`FRAME_STACK`).
- `config`: `MileConfig`, every training setting in one place.
- `model`: `MileModel` (a trained policy with its mental model) and its tick-by-tick runner.
- `loop`: the generic training loop (budget, early stopping, refit); `bc` and `mile_training`
  are the two algorithms over it; `baselines` holds the intervention-learning baselines
  (BC on interventions, HG-DAgger, IWR, Sirius, RLIF) as weighted BC over `bc`.
- `checkpoint`: atomic, verified checkpoint directories and their bytes form for ROS.
- `observations`: the recorded episode -> training arrays (state or image + end-effector).
"""
from mile_ros.learning.bc import train_bc
from mile_ros.learning.config import MileConfig
from mile_ros.learning.loop import prepare_episodes, seed_everything
from mile_ros.learning.mile_training import train_mile
from mile_ros.learning.model import MileModel, PolicyRunner
from mile_ros.learning.specs import (
           FRAME_STACK,
           ActionSpec,
           FrameStacker,
           Normalizer,
           ObsSpec,
           stack_frames,
)

__all__ = ["ObsSpec", "ActionSpec", "Normalizer", "MileConfig", "MileModel", "PolicyRunner",
           "FRAME_STACK", "FrameStacker", "stack_frames", "train_mile", "train_bc",
           "seed_everything", "prepare_episodes"]
