"""``kinema-wm fit-action-estimator`` and ``kinema-wm eval-actions``: fitting the estimator on rendered flights
and scoring generated clips (with the ground-truth and shuffled-action sanity rows)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kinema.robot_data import ActionVideoConfig, ActionVideoDataset, parse_action_json, read_video_frames

from .._atomic import write_json_atomic, write_text_atomic
from ._estimator import ActionEstimator, EstimatorConfig, step_features, step_targets
from ._metric import (
    ActionScores,
    derangement,
    match_generated,
    per_action_table,
    plot_confusion,
    score_actions,
    scores_table,
)


@dataclass
class DatasetActions:
    """The rows of an action-video dataset: video paths (relative, as in the CSV), absolute paths, actions
    (N, A, 8) binary and raw magnitude."""

    root: Path
    videos: list[str]
    binary: np.ndarray
    magnitude: np.ndarray

    @property
    def num_steps(self) -> int:
        return self.binary.shape[1]


def read_dataset_actions(dataset: str | os.PathLike) -> DatasetActions:
    """Reads ``<dataset>/metadata.csv`` through robot_data's ActionVideoDataset (strict: a bad row raises).

    Every row is scored over the first row's number of action steps A: a row with more actions (a longer clip)
    contributes its first A, which steer its first 4A + 1 frames; a row with fewer raises."""
    root = Path(dataset)
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise FileNotFoundError(f"--dataset: {metadata} does not exist (an action-video dataset directory)")
    import csv

    with open(metadata, newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f), None)
    if first is None or "action" not in first:
        raise ValueError(f"--dataset: {metadata} has no rows with an 'action' column")
    steps = parse_action_json(first["action"], source=str(metadata), row=0)[0].shape[0]
    data = ActionVideoDataset(
        ActionVideoConfig(base_path=root, num_frames=4 * steps + 1, strict=True, check_videos=False)
    )
    return DatasetActions(
        root=root,
        videos=[str(clip.files["video"].relative_to(root)) for clip in data.clips],
        # a clip holds every action of its row; the metric takes the first A: (N, A, 8)
        binary=np.stack([clip.binary[:steps] for clip in data.clips]),
        magnitude=np.stack([clip.magnitude[:steps] for clip in data.clips]),
    )


def _clip_features(path: str, num_steps: int, config: EstimatorConfig) -> np.ndarray:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    frames = read_video_frames(path)
    needed = 4 * num_steps + 1
    if frames.shape[0] < needed:
        raise ValueError(
            f"{path}: {frames.shape[0]} frames, {needed} are needed for {num_steps} action steps"
        )
    return step_features(frames[:needed], config)


@contextmanager
def feature_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of ``workers`` spawned processes for :func:`clip_features` (None for ``workers`` <= 1). Share one
    across calls: a spawned worker imports torch and kinema before its first clip, which takes far longer than the flow
    of a few hundred small clips (BENCHMARKS.md)."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def clip_features(
    paths: list[Path],
    num_steps: int,
    config: EstimatorConfig,
    workers: int = 1,
    desc: str = "flow",
    pool: ProcessPoolExecutor | None = None,
) -> list[np.ndarray]:
    """(A, D) motion descriptors of each clip: in ``pool`` when given, else in ``workers`` new processes."""
    if pool is None and (workers <= 1 or len(paths) < 2):
        return [_clip_features(str(p), num_steps, config) for p in tqdm(paths, desc=desc)]
    with contextlib.nullcontext(pool) if pool is not None else feature_pool(workers) as executor:
        futures = [executor.submit(_clip_features, str(p), num_steps, config) for p in paths]
        return [f.result() for f in tqdm(futures, desc=desc)]


def fit_estimator(
    datasets: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    config: EstimatorConfig | None = None,
    steps: int = 3000,
    seed: int = 0,
    workers: int = 1,
) -> ActionEstimator:
    """Fits the flow readout on the clips of rendered datasets (their actions are the truth) and saves it."""
    config = config or EstimatorConfig()
    features, active, motion, clips = [], [], [], 0
    for dataset in datasets:
        rows = read_dataset_actions(dataset)
        paths = [rows.root / v for v in rows.videos]
        for x, b, m in zip(
            clip_features(paths, rows.num_steps, config, workers), rows.binary, rows.magnitude
        ):
            a, mo = step_targets(b, m)
            features.append(x)
            active.append(a)
            motion.append(mo)
        clips += len(paths)
    estimator = ActionEstimator.fit(
        np.concatenate(features),
        np.concatenate(active),
        np.concatenate(motion),
        config,
        steps=steps,
        seed=seed,
    )
    estimator.save(
        out, {"fitted_on": [str(d) for d in datasets], "clips": clips, "fit_steps": steps, "seed": seed}
    )
    return estimator


def estimate_clips(
    estimator: ActionEstimator,
    paths: list[Path],
    num_steps: int,
    workers: int = 1,
    desc: str = "estimate",
    pool: ProcessPoolExecutor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(binary (N, A, 8), raw magnitude (N, A, 8)) estimated from each clip."""
    features = clip_features(paths, num_steps, estimator.config, workers, desc, pool)
    estimates = [estimator.predict(x) for x in features]
    return np.stack([b for b, _ in estimates]), np.stack([m for _, m in estimates])


def evaluate_actions(
    generated: str | os.PathLike,
    dataset: str | os.PathLike,
    estimator: ActionEstimator,
    out: str | os.PathLike | None = None,
    *,
    workers: int = 1,
    seed: int = 0,
    sanity: bool = True,
    pool: ProcessPoolExecutor | None = None,
) -> dict[str, ActionScores]:
    """Scores the generated clips against their rows' actions; with ``sanity``, also the dataset's own clips
    (should be near perfect) and the dataset's clips against shuffled actions (should be near chance). Writes
    report.json, report.md and confusion PNGs into ``out`` when given. ``pool`` (:func:`feature_pool`) replaces
    ``workers`` new processes per call."""
    rows = read_dataset_actions(dataset)
    matched, unmatched = match_generated(Path(generated), rows.videos)
    order = sorted(matched)
    true_b, true_m = rows.binary[order], rows.magnitude[order]
    est_b, est_m = estimate_clips(
        estimator, [matched[i] for i in order], rows.num_steps, workers, "generated", pool
    )
    results = {"generated": score_actions(true_b, true_m, est_b, est_m)}
    if sanity:
        gt_b, gt_m = estimate_clips(
            estimator,
            [rows.root / rows.videos[i] for i in order],
            rows.num_steps,
            workers,
            "ground truth",
            pool,
        )
        results["ground truth"] = score_actions(true_b, true_m, gt_b, gt_m)
        if len(order) >= 2:
            perm = derangement(len(order), seed)
            results["ground truth, shuffled actions"] = score_actions(true_b[perm], true_m[perm], gt_b, gt_m)
    if out is not None:
        write_report(Path(out), results, generated, dataset, len(rows.videos) - len(order), unmatched)
    return results


def write_report(
    out: Path,
    results: dict[str, ActionScores],
    generated,
    dataset,
    missing: int,
    unmatched: list[str],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "generated": str(generated),
        "dataset": str(dataset),
        "rows_without_generated_clip": missing,
        "generated_clips_without_row": unmatched,
        "scores": {name: s.to_dict() for name, s in results.items()},
    }
    write_json_atomic(out / "report.json", report)
    lines = [f"# Action following: {generated}", "", f"Dataset: {dataset}", "", scores_table(results), ""]
    for name, scores in results.items():
        lines += [f"## {name}", "", per_action_table(scores), ""]
        png = plot_confusion(scores, out / f"confusion_{name.replace(', ', '_').replace(' ', '_')}.png", name)
        lines += [f"![{name}]({png.name})", ""]
    if missing:
        lines.append(f"{missing} dataset rows had no generated clip and were left out.")
    if unmatched:
        lines.append(f"{len(unmatched)} generated clips match no dataset row: {', '.join(unmatched[:5])}")
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")


def load_report(out: str | os.PathLike) -> dict:
    return json.loads((Path(out) / "report.json").read_text())
