#!/usr/bin/env bash
# Issue 8's transfer-cube ablation (ACT vs the hybrid's A, B, C, one seed each) on one lent GPU, in calls of at
# most 10 minutes, plus ACT's temporal ensembling against chunked execution on the same ACT checkpoint.
#
#   source benchmarks/gpu_env.sh && bash benchmarks/hybrid_tc_ablation_gpu.sh $OUT
#   # exit 3: more to do, call again while the machine is warm (state in .bench/hybrid/tc); exit 0: done
#
# One recording (60 scripted episodes rendered at 240x320: 50 to train, 10 held out) is shared by four processes,
# one per policy, that train side by side on the GPU for the same --max-minutes of training each (summed over
# calls: --session-minutes stops a call's piece with a checkpoint), then evaluate on the same 50 unseen seeds.
# The last call tabulates all four (results.md / .json / .png) and evaluates ACT with temporal ensembling.
set -u
EXPORT=${1:?usage: hybrid_tc_ablation_gpu.sh EXPORT_DIR}
BUDGET_S=${BUDGET_S:-565}     # this call's wall-clock budget (the tool's limit is 600 s)
TRAIN_MINUTES=${TRAIN_MINUTES:-6}
RUN=.bench/hybrid/tc
mkdir -p "$RUN" "$EXPORT"
ABLATE=(python3 -m kinema.hybrid_policy.cli ablate --task transfer_cube --out "$RUN" --seeds 1 --size paper
  --image-size 240 320 --demos 50 --val-episodes 10 --episodes 50 --batch-size 64 --lr 1e-4
  --max-steps 1000000 --max-minutes "$TRAIN_MINUTES" --device cuda --no-progress)
left() { echo $((BUDGET_S - SECONDS)); }
export_all() {
  cp "$RUN"/log_* "$RUN"/results.* "$EXPORT"/ 2>/dev/null
  for cell in "$RUN"/runs/*; do
    [ -f "$cell/cell.json" ] && cp "$cell/cell.json" "$EXPORT/$(basename "$cell").json"
  done
  [ -f "$RUN/act_te/eval_summary.json" ] && cp "$RUN/act_te/eval_summary.json" "$EXPORT/act_temporal_ensemble.json"
  cp "$RUN"/act_te.log "$EXPORT"/ 2>/dev/null
  nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv > "$EXPORT/gpu.csv" 2>/dev/null
  true
}

echo "[$SECONDS s] prepare"
"${ABLATE[@]}" --prepare-only --workers 16 > "$RUN/log_prepare.txt" 2>&1
rc=$?; [ $rc -ne 3 ] && { tail -20 "$RUN/log_prepare.txt"; exit 1; }

# A piece of training per policy: stop 75 s (episode loading) + 30 s (margin) before the budget ends; a cell
# whose training completes goes on to its evaluation, which a later call redoes if this one runs out.
session=$(python3 -c "print(max(0.5, ($(left) - 105) / 60))")
echo "[$SECONDS s] four policies side by side, session ${session} min"
pids=()
for policy in act A B C; do
  timeout $(($(left) - 10)) "${ABLATE[@]}" --variants $policy --workers 4 --session-minutes "$session" \
    >> "$RUN/log_$policy.txt" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "[$SECONDS s] policies done (last status $status)"
tail -n 3 "$RUN"/log_act.txt "$RUN"/log_A.txt "$RUN"/log_B.txt "$RUN"/log_C.txt

cells=$(ls "$RUN"/runs/*/cell.json 2>/dev/null | wc -l)
if [ "$cells" -lt 4 ]; then export_all; echo "[$SECONDS s] $cells/4 cells done: call again"; exit 3; fi
"${ABLATE[@]}" --variants act,A,B,C --workers 16 --json > "$RUN/log_table.txt" 2>&1   # reads the four cells back
cat "$RUN/results.md"

if [ ! -f "$RUN/act_te/eval_summary.json" ]; then
  if [ "$(left)" -lt 120 ]; then export_all; echo "no time for the ensembling run: call again"; exit 3; fi
  echo "[$SECONDS s] ACT with temporal ensembling (m = 0.01) on the same checkpoint and seeds"
  timeout $(($(left) - 5)) python3 -m kinema.act_policy.cli eval --checkpoint "$RUN/runs/act_d50_s0" \
    --task transfer_cube --episodes 50 --workers 16 --temporal-ensemble 0.01 --image-size 240 320 \
    --videos 0 --device cuda --out "$RUN/act_te" --json > "$RUN/act_te.log" 2>&1
  tail -3 "$RUN/act_te.log"
fi
export_all
[ -f "$RUN/act_te/eval_summary.json" ] && { echo "done"; exit 0; }
exit 3
