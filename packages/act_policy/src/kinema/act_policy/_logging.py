"""Run logging: a JSON-lines file always, Weights & Biases when asked (offline without credentials).

wandb never stops a run: a missing package, missing credentials or no network turn into one warning and the
run goes on (offline, or with the JSON-lines log only).
"""

from __future__ import annotations

import json
import netrc
import os
import warnings
from pathlib import Path


def has_wandb_credentials() -> bool:
    """WANDB_API_KEY in the environment or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class RunLogger:
    """``log(metrics, step)`` appends to ``<out_dir>/training_log.jsonl`` and, when enabled, to wandb."""

    def __init__(self, out_dir: Path, *, use_wandb: bool, project: str, name: str | None, config: dict):
        self.path = Path(out_dir) / "training_log.jsonl"
        self.run = None
        self.mode = None
        if use_wandb:
            self.run, self.mode = self._start_wandb(out_dir, project, name, config)

    @staticmethod
    def _start_wandb(out_dir: Path, project: str, name: str | None, config: dict):
        try:
            import wandb
        except ImportError:
            warnings.warn(
                "wandb is not installed (pip install 'kinema-act-policy[wandb]'); logging to training_log.jsonl only",
                stacklevel=3,
            )
            return None, None
        modes = [os.environ["WANDB_MODE"]] if os.environ.get("WANDB_MODE") else []
        modes += ["online", "offline"] if has_wandb_credentials() else ["offline"]
        for mode in dict.fromkeys(modes):
            try:
                run = wandb.init(
                    project=project,
                    name=name,
                    config=config,
                    dir=str(out_dir),
                    mode=mode,
                    settings=wandb.Settings(init_timeout=60, silent=True),
                )
                return run, mode
            except Exception as error:  # network, auth or anything else wandb raises: never stop training
                warnings.warn(f"wandb could not start in {mode} mode ({error})", stacklevel=3)
        return None, None

    def log(self, metrics: dict, step: int) -> None:
        record = {
            "step": step,
            **{k: (float(v) if isinstance(v, int | float) else v) for k, v in metrics.items()},
        }
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.run is not None:
            try:
                self.run.log(metrics, step=step)
            except Exception as error:
                warnings.warn(
                    f"wandb logging failed ({error}); continuing with training_log.jsonl only", stacklevel=2
                )
                self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as error:
                warnings.warn(f"wandb did not finish cleanly ({error})", stacklevel=2)
            self.run = None
