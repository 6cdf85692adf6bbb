#!/usr/bin/env bash
# The paper's simulation experiments (DESIGN §4), exactly as committed under bench/results/.
# Protocol (a): N=1 iteration x k=15 episodes, baselines matched to MILE's intervention count.
# Protocol (b): N iterations x k=1 episode, no intervention matching (the paper: N=20; committed:
#   N=10 without RLIF, for CPU time -- see bench/results/PAPER_BENCH.md).
# Each command resumes where it stopped when re-run (results JSON + <out>.work/).
# Usage: bench/run_paper_bench.sh a|a-drawer|a-button|a-peg|a-lunar|a-lam|b-drawer|b-peg|all
#        (from the repository root; B_METHODS / B_ITERATIONS override protocol (b)'s scope)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy PYTHONWARNINGS=ignore
PY=${PYTHON:-python}
ALL=mile,bc-intervention,hg-dagger,iwr,sirius,rlif
B_METHODS=${B_METHODS:-$ALL}
B_ITERATIONS=${B_ITERATIONS:-20}
R=bench/results
which=${1:-all}

run() {  # run <protocol> <task> <args...>
  local p=$1 task=$2; shift 2
  local name=${task#metaworld/}
  /usr/bin/time -f "$p $task wall %e s" $PY -m mile_ros.cli bench --task "$task" "$@" \
    --seeds 3 --out $R/paper_${p}_$name.json --plot $R/paper_${p}_$name.png
}

for pair in drawer:metaworld/drawer-open button:metaworld/button-press peg:metaworld/peg-insert-side \
            lunar:lunarlander; do
  if [[ $which == a || $which == all || $which == a-${pair%%:*} ]]; then
    run a ${pair#*:} --methods $ALL --iterations 1 --episodes 15
  fi
done
# Secondary (chosen after seeing protocol (a), see PAPER_BENCH.md): MILE alone with lambda=0.8.
for pair in drawer:metaworld/drawer-open button:metaworld/button-press peg:metaworld/peg-insert-side \
            lunar:lunarlander; do
  if [[ $which == a-lam || $which == all ]]; then
    task=${pair#*:}; name=${task#metaworld/}
    /usr/bin/time -f "lam0.8 $task wall %e s" $PY -m mile_ros.cli bench --task $task --methods mile \
      --mile lam=0.8 --iterations 1 --episodes 15 --seeds 3 --out $R/paper_a_${name}_mile-lam0.8.json
  fi
done
if [[ $which == b-drawer || $which == all ]]; then
  run b metaworld/drawer-open --methods $B_METHODS --iterations $B_ITERATIONS --episodes 1 --no-equalize
fi
if [[ $which == b-peg || $which == all ]]; then
  run b metaworld/peg-insert-side --methods $B_METHODS --iterations $B_ITERATIONS --episodes 1 --no-equalize
fi
