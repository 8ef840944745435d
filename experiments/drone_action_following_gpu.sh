#!/usr/bin/env bash
# One call of the drone experiment on the GPU machine: the shared stages (data, estimator) once, then the four
# injection types in four parallel processes. The small model leaves an H100 mostly idle, so four runs share it
# at little cost each. Resumable: run the same line again (while the machine is warm) to continue.
#
#   source benchmarks/gpu_env.sh && bash experiments/drone_action_following_gpu.sh train $OUT   # first call
#   source benchmarks/gpu_env.sh && bash experiments/drone_action_following_gpu.sh all $OUT     # then until done
#
# Carry .whl .whl-model .whl-video .whl-drone .gl; state lives in .bench/drone (git-ignored).
set -uo pipefail
stage=${1:?stage: train or all}
out=${2:?the folder results go to}
budget=${BUDGET_MINUTES:-9.2}
variants=${VARIANTS:-cross_attn_frame adaln_tmod add_residual cross_attn_window}
script=experiments/drone_action_following.py
extra=${EXTRA:-}  # e.g. EXTRA="--smoke --work .bench/drone-smoke" checks the driver on a CPU
mkdir -p "$out"

python3 "$script" $extra --stage data --budget_minutes "$budget" || exit $?
python3 "$script" $extra --stage estimator --budget_minutes "$budget" || exit $?
left=$(python3 -c "print(max(0.5, $budget - $SECONDS / 60))")
pids=()
for v in $variants; do
    python3 "$script" $extra --stage "$stage" --variants "$v" --out "$out" --budget_minutes "$left" \
        > "$out/log_$v.txt" 2>&1 &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
tail -n 4 "$out"/log_*.txt
exit $status
