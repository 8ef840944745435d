#!/usr/bin/env bash
# One call of the drone experiment on the GPU machine: the shared stages (data, estimator) once, then the four
# injection types in four parallel processes (the small model leaves an H200 mostly idle). Resumable: run the same
# line again while the machine is warm to continue; each finished variant writes its files into $OUT.
#
#   source benchmarks/gpu_env.sh && bash experiments/drone_action_following_gpu.sh $OUT
#
# Carry .whl-model .whl-video .whl-drone .gl; state lives in .bench/drone (git-ignored). Output is unbuffered and
# every stage logs as it goes: a call cut by its time limit still shows how far it got.
set -uo pipefail
out=${1:?the folder results go to}
budget=${BUDGET_MINUTES:-9.0}
variants=${VARIANTS:-cross_attn_frame adaln_tmod add_residual cross_attn_window}
preset=${PRESET:-gpu}
mkdir -p "$out"
wm() { python3 -m kinema.video_world_model.cli drone-experiment --preset "$preset" --work .bench/drone-$preset "$@"; }
# data and estimator (rendering and flow use spawned worker processes)
wm --prepare-only --budget_minutes "$budget" 2>&1 | tee "$out/log_prepare.txt" | grep -v "it/s\]" || exit $?
python3 - "$budget" "$SECONDS" <<'PY' > /tmp/left_minutes
import sys; print(max(0.5, float(sys.argv[1]) - float(sys.argv[2]) / 60))
PY
left=$(cat /tmp/left_minutes)
pids=()
for v in $variants; do
    wm --variants "$v" --out "$out" --budget_minutes "$left" --reserve_seconds 120 > "$out/log_$v.txt" 2>&1 &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
tail -n 5 "$out"/log_*.txt
exit $status
