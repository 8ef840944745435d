"""Actions for ``kinema-wm play``: one discrete action per block, from a file / spec or from the keyboard.

Action ids are :data:`PLAY_ACTIONS` (0 idle, then forward, back, left, right, yaw_left, yaw_right, pitch_up,
pitch_down). Keys: W/S forward/back, A/D left/right, arrow left/right yaw left/right, arrow up/down pitch up/down,
space idle, q quit. The keyboard is read from a terminal in cbreak mode without blocking; when stdin is not a
terminal the caller falls back to the file actions (or idle).
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path

from ..modeling._action_modules import PLAY_ACTIONS

KEY_BINDINGS = {
    "w": "forward",
    "s": "back",
    "a": "left",
    "d": "right",
    "\x1b[D": "yaw_left",
    "\x1b[C": "yaw_right",
    "\x1b[A": "pitch_up",
    "\x1b[B": "pitch_down",
    "\x1bOD": "yaw_left",  # the same arrows in the terminal's application cursor mode
    "\x1bOC": "yaw_right",
    "\x1bOA": "pitch_up",
    "\x1bOB": "pitch_down",
    " ": "idle",
    "q": "quit",
}


def action_id(name: str, where: str = "actions") -> int:
    """An action name (or its id as text) -> its id in :data:`PLAY_ACTIONS`."""
    text = str(name).strip().lower()
    if text.isdigit() and int(text) < len(PLAY_ACTIONS):
        return int(text)
    if text not in PLAY_ACTIONS:
        raise ValueError(f"{where}: unknown action {name!r}; expected one of {list(PLAY_ACTIONS)}")
    return PLAY_ACTIONS.index(text)


def parse_block_actions(source: str | os.PathLike, num_blocks: int) -> list[int]:
    """Per-block action ids from a JSON file (a list of names or ids, or {"actions": [...]}), a text file (one
    action per line, # comments), or a spec ``forwardx3,yaw_leftx2,idle`` (``xN`` repeats, default 1).
    Exactly ``num_blocks`` actions are expected."""
    path = Path(source)
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--actions: no file at {path}")
        if path.suffix.lower() == ".json":
            try:
                value = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"--actions: {path} is not valid JSON ({error.msg})") from None
            if isinstance(value, dict):
                value = value.get("actions")
            if not isinstance(value, list):
                raise ValueError(f"--actions: {path} must hold a list of actions or {{'actions': [...]}}")
            ids = [action_id(item, str(path)) for item in value]
        else:
            lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
            ids = [action_id(line, str(path)) for line in lines if line]
    else:
        ids = []
        for segment in (part.strip() for part in str(source).split(",")):
            if not segment:
                continue
            name, sep, count = segment.rpartition("x")
            if sep and count.isdigit() and name:
                ids += [action_id(name, "--actions")] * int(count)
            else:
                ids.append(action_id(segment, "--actions"))
    if len(ids) != num_blocks:
        raise ValueError(f"--actions: {len(ids)} actions for {num_blocks} blocks (one action per block)")
    return ids


def parse_keys(data: str) -> list[str]:
    """Typed characters -> the actions they name, in order ("quit" for q); other keys are ignored.

    An escape sequence is consumed whole and ignored unless it is a bound arrow, so the bytes of Ctrl+Left
    (``ESC [ 1 ; 5 D``) or F5 never read as the letter keys they end with; one cut short at the end is dropped.
    """
    actions, i = [], 0
    while i < len(data):
        if data[i] == "\x1b":
            end = _escape_end(data, i)
            if data[i:end] in KEY_BINDINGS:
                actions.append(KEY_BINDINGS[data[i:end]])
            i = end
            continue
        key = data[i].lower()
        if key in KEY_BINDINGS:
            actions.append(KEY_BINDINGS[key])
        i += 1
    return actions


def _escape_end(data: str, start: int) -> int:
    """The index just past the escape sequence at ``data[start]`` (ECMA-48): CSI ``ESC [`` parameter and
    intermediate bytes then one final byte in @..~; SS3 ``ESC O`` and one byte; else ESC and one byte (Alt+key)."""
    i = start + 1
    if i >= len(data):
        return i
    if data[i] == "O":  # SS3: one more byte (the application-mode arrows)
        return min(i + 2, len(data))
    if data[i] != "[":
        return i + 1
    i += 1
    while i < len(data) and "\x20" <= data[i] <= "\x3f":  # parameter (0-9 ; < = > ?) and intermediate bytes
        i += 1
    return min(i + 1, len(data))  # the final byte (@ to ~), when it arrived


def choose_action(pressed: list[str]) -> str:
    """The block's action: the last action key pressed since the previous block, idle when none was."""
    moves = [a for a in pressed if a != "quit"]
    return moves[-1] if moves else "idle"


class KeyboardActions:
    """Non-blocking key reader for a terminal: ``with KeyboardActions() as keys: keys.poll() -> [actions]``.

    On a terminal stdin is put in cbreak mode (keys arrive without Enter, Ctrl-C still interrupts) and restored on
    exit. ``is_terminal`` is False when stdin is not a terminal (a pipe, a test, no termios): ``poll`` returns [].
    """

    def __init__(self, stream=None):
        self._stream = sys.stdin if stream is None else stream
        self._saved = None
        try:
            self._fd = self._stream.fileno()
            self.is_terminal = os.isatty(self._fd)
        except (AttributeError, OSError, ValueError):
            self._fd, self.is_terminal = None, False
        if self.is_terminal:
            try:
                import termios  # noqa: F401  (POSIX terminals only)
            except ImportError:
                self.is_terminal = False

    def __enter__(self) -> KeyboardActions:
        if self.is_terminal:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def poll(self) -> list[str]:
        """The actions typed since the last poll (never waits)."""
        if not self.is_terminal:
            return []
        chunks = []
        while select.select([self._fd], [], [], 0)[0]:
            data = os.read(self._fd, 1024)
            if not data:
                break
            chunks.append(data)
        return parse_keys(b"".join(chunks).decode("utf-8", errors="ignore"))
