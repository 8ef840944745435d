"""Run logging: JSON lines always; wandb offline without credentials, and never a crash for its sake."""

from __future__ import annotations

import json
import sys
import types

import pytest

from kinema.act_policy._logging import RunLogger


def _fake_wandb(fail_modes: tuple[str, ...] = (), fail_log: bool = False):
    calls = []

    class Run:
        def log(self, metrics, step):
            if fail_log:
                raise ConnectionError("network unreachable")
            calls.append(("log", step, metrics))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs["mode"]))
        if kwargs["mode"] in fail_modes:
            raise ConnectionError(f"cannot reach the server in {kwargs['mode']} mode")
        return Run()

    module = types.SimpleNamespace(init=init, Settings=lambda **kwargs: kwargs)
    return module, calls


def test_jsonl_is_written_without_wandb(tmp_path):
    logger = RunLogger(tmp_path, use_wandb=False, project="p", name=None, config={})
    logger.log({"train/loss": 1.5}, step=3)
    logger.log({"val/l1": 0.25}, step=3)
    lines = [json.loads(x) for x in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert lines == [{"step": 3, "train/loss": 1.5}, {"step": 3, "val/l1": 0.25}]


def test_offline_without_credentials(tmp_path, monkeypatch):
    module, calls = _fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    logger = RunLogger(tmp_path, use_wandb=True, project="p", name="run", config={"a": 1})
    assert logger.mode == "offline" and calls[0] == ("init", "offline")
    logger.log({"train/loss": 1.0}, step=1)
    logger.finish()
    assert calls[1:] == [("log", 1, {"train/loss": 1.0}), ("finish",)]


def test_no_network_falls_back_to_offline_then_to_the_jsonl(tmp_path, monkeypatch):
    module, calls = _fake_wandb(fail_modes=("online",))
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.warns(UserWarning, match="wandb could not start in online mode"):
        logger = RunLogger(tmp_path, use_wandb=True, project="p", name=None, config={})
    assert logger.mode == "offline" and [c[1] for c in calls if c[0] == "init"] == ["online", "offline"]
    module, _ = _fake_wandb(fail_log=True)
    monkeypatch.setitem(sys.modules, "wandb", module)
    logger = RunLogger(tmp_path, use_wandb=True, project="p", name=None, config={})
    with pytest.warns(UserWarning, match="wandb logging failed"):
        logger.log({"train/loss": 2.0}, step=5)
    logger.log({"train/loss": 1.0}, step=6)  # wandb dropped, the run goes on
    assert logger.run is None and "train/loss" in (tmp_path / "training_log.jsonl").read_text()


def test_missing_package_is_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.warns(
        UserWarning, match=r"wandb is not installed \(pip install 'kinema-act-policy\[wandb\]'\)"
    ):
        logger = RunLogger(tmp_path, use_wandb=True, project="p", name=None, config={})
    assert logger.run is None
