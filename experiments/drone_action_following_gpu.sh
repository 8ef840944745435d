#!/usr/bin/env bash
# One call of the drone experiment on the GPU machine: the shared stages (data, estimator) once, then the
# injection types in VARIANTS, one process per word (default: two processes of two variants each; one process at
# batch 32 takes up to 62 GB of the H200's 140: four at once ran out of memory). Two processes sharing the GPU
# step at 0.84 s each, one alone at 0.44 s: parallel buys nothing, so for comparable rows train one variant per
# call (VARIANTS=cross_attn_frame STEPS=800 FINISH=1 BUDGET_MINUTES=9.2 RESERVE_SECONDS=80 reaches 800 steps on
# a warm machine whose data is prepared; a fresh machine first spends about 170 s preparing, so drop FINISH there
# and run the line again). Resumable: run the same line again while the machine is warm
# to continue (state lives in .bench/drone-<preset>, git-ignored, kept by a warm machine between calls); every
# 200 steps each variant saves a checkpoint.
#
#   source benchmarks/gpu_env.sh && bash experiments/drone_action_following_gpu.sh $OUT
#   source benchmarks/gpu_env.sh && FINISH=1 BUDGET_MINUTES=7 bash experiments/drone_action_following_gpu.sh $OUT
#   source benchmarks/gpu_env.sh && VARIANTS=adaln_tmod STEPS=1200 bash experiments/drone_action_following_gpu.sh $OUT
#
# The second form is the last call of a series: a variant that has not reached the preset's steps is generated
# and scored at its last checkpoint (its results_<variant>.json records the steps trained).
# Carry .whl-model .whl-video .whl-drone .gl. Output is unbuffered and every stage logs as it goes: a call cut by
# its time limit still shows how far it got. Everything written to $OUT is packed into $OUT/drone_gpu.tar.gz
# (a call brings back at most 8 files); $OUT/summary.txt holds the logs' tails and any score tables.
set -uo pipefail
out=${1:?the folder results go to}
budget=${BUDGET_MINUTES:-9.0}
# one process per word, each training its comma-separated variants in turn
variants=${VARIANTS:-adaln_tmod,cross_attn_frame add_residual,cross_attn_window}
preset=${PRESET:-gpu}
reserve=${RESERVE_SECONDS:-100}
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
finish=()
[ "${FINISH:-0}" = 1 ] && finish=(--finish)
# more options for every variant process, e.g. STEPS=1200 to train past the preset's steps
[ -n "${STEPS:-}" ] && finish+=(--steps "$STEPS")
files=$(mktemp -d)
wm() { python3 -m kinema.video_world_model.cli drone-experiment --preset "$preset" --work .bench/drone-$preset "$@"; }
pack() {
    {
        tail -n 8 "$files"/log_*.txt
        for f in "$files"/results_*.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
    } > "$out/summary.txt" 2>&1
    tar czf "$out/drone_gpu.tar.gz" -C "$files" .
}
trap pack EXIT
mkdir -p "$out"
# data and estimator (rendering and flow use spawned worker processes)
wm --prepare-only --budget_minutes "$budget" > "$files/log_prepare.txt" 2>&1 || exit $?
left=$(python3 -c "import sys; print(max(0.5, $budget - $SECONDS / 60))")
pids=()
for v in $variants; do
    wm --variants "$v" --out "$files" --budget_minutes "$left" --reserve_seconds "$reserve" "${finish[@]}" \
        > "$files/log_${v//,/+}.txt" 2>&1 &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
