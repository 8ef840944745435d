"""kinema-wm play on the tiny model, its action sources (file, spec, keyboard on a pseudo-terminal) and the
progressive mp4 writer."""

import argparse
import json
import os
import sys

import numpy as np
import pytest
import torch
from diffusers.video_processor import VideoProcessor
from PIL import Image

from kinema.robot_data import probe_video, read_video_frames
from kinema.video_world_model import load_wan_components
from kinema.video_world_model.causal._checkpoint import write_action_checkpoint
from kinema.video_world_model.causal._play_input import (
    KeyboardActions,
    choose_action,
    parse_block_actions,
    parse_keys,
)
from kinema.video_world_model.causal._play_output import ProgressiveVideoWriter
from kinema.video_world_model.cli import _play as _cli_play
from kinema.video_world_model.modeling import decode_latents, encode_video
from kinema.video_world_model.modeling._action_modules import ActionSequenceEncoder, HistoryActionModule
from kinema.video_world_model.testing import (
    TINY_ACTION_DIM,
    randomize_projection,
    tiny_causal_pipeline,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronization
    yield
    torch.set_num_threads(threads)


def play(argv):
    parser = argparse.ArgumentParser(prog="kinema-wm")
    _cli_play.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["play", *argv])
    return args.run(args)


def pooled(image):
    """(64, 64, 3) -> (8, 8, 3) means of 8x8 tiles."""
    return image.reshape(8, 8, 8, 8, 3).mean(axis=(1, 3))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    pipe = tiny_causal_pipeline(
        action_module=ActionSequenceEncoder(action_dim=TINY_ACTION_DIM, embed_dim=8, hidden_dim=8)
    )
    randomize_projection(pipe)
    return write_action_checkpoint(tmp_path / "act", pipe, base_model="tiny-wan")


def test_play_writes_the_rollout_with_file_actions(tiny_wan_dir, checkpoint, tmp_path, capsys):
    actions = tmp_path / "actions.json"
    actions.write_text(json.dumps(["forward", "yaw_left", "idle"]))
    image = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "play.mp4"
    common = ["--model_dir", str(tiny_wan_dir), "--action_checkpoint", str(checkpoint), "--prompt", "a drone"]
    assert play([*common, "--actions", str(actions), "--out", str(out), "--dtype", "fp32", "--keyboard"]) == 0
    info = probe_video(out)
    assert (info.num_frames, info.height, info.width) == (4 * 6 - 3, 64, 64)  # 3 blocks of 2 latent frames
    printed = capsys.readouterr().out
    assert "stdin is not a terminal; using --actions" in printed
    assert "block 1/3 [forward]: 5 frames" in printed and "block 3/3 [idle]: 8 frames" in printed
    assert "generated frames/s" in printed and "first frames after" in printed

    # a spec instead of a file, --image (TI2V: frame 0 is the image), fewer blocks, an unbounded window
    with_image = tmp_path / "image.mp4"
    options = ["--blocks", "2", "--window", "none", "--image", str(image), "--dtype", "fp32"]
    assert play([*common, *options, "--actions", "forwardx2", "--out", str(with_image)]) == 0
    assert probe_video(with_image).num_frames == 4 * 4 - 3
    vae = load_wan_components(tiny_wan_dir, torch.float32)["vae"]
    pixels = VideoProcessor(vae_scale_factor=16).preprocess(Image.open(image), height=64, width=64)
    expected = decode_latents(vae, encode_video(vae, pixels.unsqueeze(2)))[0, :, 0]  # (3, H, W) in [-1, 1]
    expected = ((expected + 1) * 127.5).permute(1, 2, 0).numpy()
    first = read_video_frames(with_image)[0].astype(float)
    # frame 0 is the image's latent decoded; H.264 keeps the coarse picture of this noisy tiny-VAE output: 8x8 means
    error = np.abs(pooled(first) - pooled(expected)).mean()
    assert error < 2.5, error  # (a misplaced frame is ~4 away)

    with pytest.raises(FileExistsError, match="pass --overwrite"):
        play([*common, "--actions", "idlex3", "--out", str(out), "--dtype", "fp32"])
    with pytest.raises(ValueError, match="2 actions for 3 blocks"):
        play([*common, "--actions", "idlex2", "--out", str(tmp_path / "x.mp4"), "--dtype", "fp32"])
    with pytest.raises(ValueError, match="smaller than one block"):
        play([*common, "--window", "1", "--out", str(tmp_path / "x.mp4"), "--dtype", "fp32"])
    assert not (tmp_path / "x.mp4").exists()


def test_play_refuses_actions_for_a_module_that_derives_them(tiny_wan_dir, tmp_path):
    pipe = tiny_causal_pipeline(action_module=HistoryActionModule(latent_dim=4, action_dim=TINY_ACTION_DIM))
    history = write_action_checkpoint(tmp_path / "history", pipe)
    with pytest.raises(ValueError, match="HistoryActionModule derives actions itself"):
        play(["--model_dir", str(tiny_wan_dir), "--action_checkpoint", str(history), "--prompt", "a drone",
              "--actions", "idlex3", "--out", str(tmp_path / "o.mp4")])  # fmt: skip


def test_block_action_sources(tmp_path):
    assert parse_block_actions("forwardx2,yaw_left,idlex1", 4) == [1, 1, 5, 0]
    listed = tmp_path / "a.json"
    listed.write_text(json.dumps({"actions": ["back", 8, "3"]}))
    assert parse_block_actions(listed, 3) == [2, 8, 3]
    lines = tmp_path / "a.txt"
    lines.write_text("pitch_up\n# a comment\n\nright  # strafe\n")
    assert parse_block_actions(lines, 2) == [7, 4]
    with pytest.raises(ValueError, match="unknown action 'jump'"):
        parse_block_actions("jumpx2", 2)
    with pytest.raises(FileNotFoundError, match="no file at"):
        parse_block_actions(tmp_path / "missing.json", 1)


def test_keys_map_to_the_eight_drone_actions():
    typed = "wasd\x1b[D\x1b[C\x1b[A\x1b[B \x1bOAzq"
    assert parse_keys(typed) == [
        "forward", "left", "back", "right", "yaw_left", "yaw_right", "pitch_up", "pitch_down", "idle",
        "pitch_up", "quit",
    ]  # fmt: skip
    assert parse_keys("W") == ["forward"]
    assert choose_action(["left", "forward", "quit"]) == "forward"
    assert choose_action([]) == "idle"


@pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin")), reason="needs a POSIX pseudo-terminal")
def test_keyboard_reads_a_terminal_without_blocking_and_restores_it():
    import termios

    master, slave = os.openpty()
    with os.fdopen(slave, "rb", buffering=0) as terminal:
        before = termios.tcgetattr(slave)
        with KeyboardActions(terminal) as keys:
            assert keys.is_terminal
            assert keys.poll() == []  # nothing typed: returns at once
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: keys arrive without Enter
            os.write(master, b"w\x1b[D")
            assert keys.poll() == ["forward", "yaw_left"]
            assert keys.poll() == []
        assert termios.tcgetattr(slave) == before
    os.close(master)


def test_keyboard_is_off_when_stdin_is_not_a_terminal(tmp_path):
    with open(tmp_path / "f", "wb") as pipe_like, KeyboardActions(pipe_like) as keys:
        assert not keys.is_terminal and keys.poll() == []


def test_progressive_writer_renames_only_a_finished_file(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    out = tmp_path / "v.mp4"
    with ProgressiveVideoWriter(out, fps=8) as writer:
        writer.write(frames)
        assert not out.exists()  # written under a temporary name until the end
        writer.write(frames[:2])
    assert probe_video(out).num_frames == 5
    broken = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), ProgressiveVideoWriter(broken, fps=8) as writer:
        writer.write(frames)
        raise RuntimeError("generation failed")
    assert not broken.exists() and list(tmp_path.glob(".*tmp")) == []
