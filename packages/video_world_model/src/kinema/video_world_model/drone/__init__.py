"""The drone experiment: does the world model follow the actions? A small Wan model trained from scratch on
rendered drone flights, an action estimator (optical flow + a learned readout), the action-following metric,
and the experiment that runs them (``kinema-wm demo`` / ``drone-experiment``; results in RESULTS.md).

    from kinema.video_world_model.drone import DroneExperiment, preset
    DroneExperiment(preset("cpu"), work_dir).run(["cross_attn_frame"])
"""

from ._estimator import ActionEstimator
from ._eval import evaluate_actions, fit_estimator
from ._experiment import DroneExperiment, preset
from ._metric import ActionScores, score_actions
from ._model import DroneWorldModelTrainer, generate_latents

__all__ = [
    "ActionEstimator",
    "ActionScores",
    "DroneExperiment",
    "DroneWorldModelTrainer",
    "evaluate_actions",
    "fit_estimator",
    "generate_latents",
    "preset",
    "score_actions",
]
