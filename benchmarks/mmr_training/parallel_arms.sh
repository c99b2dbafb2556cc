#!/usr/bin/env bash
# Train several arms of the MMR training benchmark at once, one process each (one GPU holds them all; on a CPU they
# share its cores), then evaluate them together, so that every comparison in the results is paired.
#
#   benchmarks/mmr_training/parallel_arms.sh RESULTS.json ARM [ARM ...] -- [run.py options]
#   benchmarks/mmr_training/parallel_arms.sh /tmp/pydocs.json a_mmr b_largest_group_only c_single_vector -- \
#       --passages pydocs --cross-domain sources --test-queries 1000 --dev-queries 200 --corpus-size 3000 \
#       --max-length 256 --eval-max-length 448 --steps 100 --work-dir /tmp/mmr-pydocs
#
# The sets are built once first (--prepare-data); each arm's log is RESULTS.json's name + .<arm>.log.
set -euo pipefail
if [ $# -lt 3 ]; then sed -n 5,7p "$0"; exit 2; fi
results=$1; shift
arms=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do arms+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
run=(python3 "$(dirname "$0")/run.py" "$@" --reuse-data)
[ -x .venv/bin/python ] && run[0]=.venv/bin/python
"${run[@]}" --prepare-data
pids=()
for arm in "${arms[@]}"; do
  "${run[@]}" --arms "$arm" --results "${results%.json}.$arm.json" > "${results%.json}.$arm.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "arm ${arms[$i]} failed: see ${results%.json}.${arms[$i]}.log" >&2; failed=1; }
done
[ $failed = 0 ] || exit 1
"${run[@]}" --arms "${arms[@]}" --reuse-trained --results "$results"
