#!/usr/bin/env bash
# The paper's simulation experiments (README "Benchmarks") on the one MILE the robot runs (since
# aac7e20: train_mile / train_bc, no demonstrations, 500-tick Meta-World, sampled person actions),
# written to bench/results/one_mile_<protocol>_<task>.json.
# Protocol (a): N=1 iteration x k=15 episodes, baselines matched to MILE's intervention count,
#   10 training seeds (A_SEEDS; committed so far: 3 seeds on each of the four tasks, A_SEEDS=3).
# Protocol (b): N=20 iterations x k=1 episode, no intervention matching; 5 training seeds
#   (not yet run on this code).
# Fig. 5 ablation: `fig5` runs protocol (a) on drawer-open with --demos 1, 3, 5 (baselines only).
# Each command resumes where it stopped when re-run (results JSON + <out>.work/), and extends an
# existing results file when given more iterations, methods or seeds.
# Usage: bench/run_paper_bench.sh a|a-drawer|a-button|a-peg|a-lunar|b|b-drawer|b-button|b-peg|b-lunar|fig5|all
#        (from the repository root; A_SEEDS, B_SEEDS, B_METHODS, B_ITERATIONS override the scope)
set -euo pipefail
cd "$(dirname "$0")/.."
export MUJOCO_GL=${MUJOCO_GL:-egl} SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy PYTHONWARNINGS=ignore
PY=${PYTHON:-python}
ALL=mile,bc-intervention,hg-dagger,iwr,sirius,rlif
A_SEEDS=${A_SEEDS:-10}
B_METHODS=${B_METHODS:-$ALL}
B_ITERATIONS=${B_ITERATIONS:-20}
R=bench/results
which=${1:-all}

run() {  # run <protocol> <task> <args...>
  local p=$1 task=$2; shift 2
  local name=${task#metaworld/}
  /usr/bin/time -f "$p $task wall %e s" $PY -m mile_ros.cli bench --task "$task" "$@" \
    --out $R/one_mile_${p}_$name.json --plot $R/one_mile_${p}_$name.png
}

for pair in drawer:metaworld/drawer-open button:metaworld/button-press peg:metaworld/peg-insert-side \
            lunar:lunarlander; do
  if [[ $which == a || $which == all || $which == a-${pair%%:*} ]]; then
    run a ${pair#*:} --methods $ALL --iterations 1 --episodes 15 --seeds $A_SEEDS
  fi
done
for pair in drawer:metaworld/drawer-open:5 button:metaworld/button-press:5 peg:metaworld/peg-insert-side:5 \
            lunar:lunarlander:5; do
  IFS=: read -r short task seeds <<< "$pair"
  if [[ $which == b || $which == all || $which == b-$short ]]; then
    run b $task --methods $B_METHODS --iterations $B_ITERATIONS --episodes 1 --no-equalize --seeds ${B_SEEDS:-$seeds}
  fi
done
if [[ $which == fig5 || $which == all ]]; then
  for n in 1 3 5; do
    /usr/bin/time -f "fig5 demos $n wall %e s" $PY -m mile_ros.cli bench --task metaworld/drawer-open \
      --methods $ALL --iterations 1 --episodes 15 --seeds $A_SEEDS --demos $n \
      --out $R/one_mile_fig5_demos$n.json --plot $R/one_mile_fig5_demos$n.png
  done
fi
