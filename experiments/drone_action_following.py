"""Does the world model follow the actions? The drone experiment, now in the package: this script forwards to
``kinema-wm drone-experiment`` (see ``kinema.video_world_model.drone._experiment`` for the stages and presets).

    # GPU (one H100/H200), resumable in calls of 10 minutes, all four injection types in parallel:
    source benchmarks/gpu_env.sh && bash experiments/drone_action_following_gpu.sh $OUT
    # CPU, the same pipeline at the demo's scale:
    python experiments/drone_action_following.py --preset cpu --variants adaln_tmod --out runs/drone_cpu
    # afterwards, anywhere: the RESULTS.md table from the result files
    python experiments/drone_action_following.py report runs/*/results_*.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def report(paths: list[str]) -> None:
    """The RESULTS.md table from results_*.json files: balanced accuracy of each variant's three conditions."""
    print("| injection type | steps | own actions | shuffled | zero | ground truth |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in paths:
        data = json.loads(Path(path).read_text())
        variant, scores = data["meta"]["variant"], data["scores"]
        row = [
            scores[f"{variant}, {c}"]["balanced_accuracy"]
            for c in ("actions", "shuffled_actions", "zero_actions")
        ]
        row.append(scores["ground truth"]["balanced_accuracy"])
        print(
            f"| {variant} | {data['meta']['steps_trained']} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
        )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["report"]:
        report(sys.argv[2:])
        sys.exit(0)
    from kinema.video_world_model.cli import main

    sys.exit(main(["drone-experiment", *sys.argv[1:]]))
