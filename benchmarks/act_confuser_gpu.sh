#!/usr/bin/env bash
# Issue 6 / 12 / 21's confuser experiment (ACT trained without a confuser vs on confuser demonstrations, plain and
# with each remedy of the experiment's default list; all evaluated on the confuser scene) on one lent GPU, in calls of at most 10 minutes.
#
#   source benchmarks/gpu_env.sh && bash benchmarks/act_confuser_gpu.sh $OUT
#   # exit 3: more to do, call again while the machine is warm (state in .bench/act/confuser); exit 0: done
#
# Both recordings (50 scripted episodes each, 240x320) are made once; then the ten cells train side by side on
# the GPU, one process each (`kinema-act experiment confuser --cells NAME`), for TRAIN_MINUTES of training each
# (summed over calls), and evaluate on 50 unseen seeds of transfer_cube_confuser; the last call tabulates them
# all (confuser_experiment.md / .json / .png).
set -u
EXPORT=${1:?usage: act_confuser_gpu.sh EXPORT_DIR}
BUDGET_S=${BUDGET_S:-565}        # this call's wall-clock budget (the tool's limit is 600 s)
TRAIN_MINUTES=${TRAIN_MINUTES:-10}
RUN=.bench/act/confuser
CELLS=(clean confuser_plain confuser_aux_head confuser_film confuser_crop confuser_crop_replace confuser_heatmap
  confuser_strong confuser_contrastive confuser_heatmap+crop_replace)
mkdir -p "$RUN" "$EXPORT"
left() { echo $((BUDGET_S - SECONDS)); }
record() {  # task folder
  [ -f "$RUN/$2/recording.json" ] || python3 -m kinema.robot_data.cli record-sim --task "$1" --episodes 50 \
    --out "$RUN/$2" --workers 16 --image-size 240 320 --overwrite > "$RUN/log_record_$2.txt" 2>&1
}
EXPERIMENT=(python3 -m kinema.act_policy.cli experiment confuser --clean-data "$RUN/clean_data"
  --confuser-data "$RUN/confuser_data" --out "$RUN" --batch-size 64 --lr 1e-4 --lr-backbone 1e-4
  --warmup-steps 500 --lr-schedule cosine --max-minutes "$TRAIN_MINUTES" --episodes 50 --videos 1
  --device cuda --no-progress)
export_all() {
  cp "$RUN"/confuser_experiment.* "$RUN"/log_* "$EXPORT"/ 2>/dev/null
  for cell in "${CELLS[@]}"; do
    video=$(ls "$RUN/runs/$cell/eval_confuser/videos/"*.mp4 2>/dev/null | head -1)
    [ -n "$video" ] && cp "$video" "$EXPORT/$cell.mp4"
  done
  true
}

echo "[$SECONDS s] recordings"
record transfer_cube clean_data || { tail -5 "$RUN/log_record_clean_data.txt"; exit 1; }
record transfer_cube_confuser confuser_data || { tail -5 "$RUN/log_record_confuser_data.txt"; exit 1; }

# a piece of training per cell: stop 90 s (episode loading) + 30 s before the budget ends; a cell whose training
# completes goes on to its evaluation, which a later call redoes if this one runs out
session=$(python3 -c "print(max(0.5, ($(left) - 120) / 60))")
echo "[$SECONDS s] ${#CELLS[@]} cells side by side, session ${session} min"
pids=()
for cell in "${CELLS[@]}"; do
  timeout $(($(left) - 10)) "${EXPERIMENT[@]}" --cells "$cell" --workers 2 --session-minutes "$session" \
    >> "$RUN/log_$cell.txt" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "[$SECONDS s] cells done for this call"

"${EXPERIMENT[@]}" --workers 16 --session-minutes 0.01 > "$RUN/log_table.txt" 2>&1   # tabulates, trains nothing new
status=$?
cat "$RUN/confuser_experiment.md" 2>/dev/null
export_all
[ $status -eq 0 ] && { echo "done"; exit 0; }
echo "not finished: call again"
exit 3
