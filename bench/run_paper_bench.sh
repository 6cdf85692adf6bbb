#!/usr/bin/env bash
# The paper's simulation experiments (DESIGN §4), exactly as committed under bench/results/.
# Protocol (a): N=1 iteration x k=15 episodes, baselines matched to MILE's intervention count.
# Protocol (b): N=20 iterations x k=1 episode.
# Each command resumes where it stopped when re-run (results JSON + <out>.work/).
# Usage: bench/run_paper_bench.sh [a|b|all]   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy PYTHONWARNINGS=ignore
PY=${PYTHON:-python}
METHODS=mile,bc-intervention,hg-dagger,iwr,sirius,rlif
R=bench/results
which=${1:-all}

if [[ $which == a || $which == all ]]; then
  for task in metaworld/drawer-open metaworld/button-press metaworld/peg-insert-side lunarlander; do
    name=${task#metaworld/}
    /usr/bin/time -f "wall %e s" $PY -m mile_ros.cli bench --task "$task" --methods $METHODS \
      --iterations 1 --episodes 15 --seeds 3 --out $R/paper_a_$name.json --plot $R/paper_a_$name.png
  done
fi
if [[ $which == b || $which == all ]]; then
  for task in metaworld/drawer-open metaworld/peg-insert-side; do
    name=${task#metaworld/}
    /usr/bin/time -f "wall %e s" $PY -m mile_ros.cli bench --task "$task" --methods $METHODS \
      --iterations 20 --episodes 1 --seeds 3 --out $R/paper_b_$name.json --plot $R/paper_b_$name.png
  done
fi
