"""kinema-wm: the action-conditioned Wan world model's command line.

Exit codes: 0 ok, 1 failure (a file, a model or the data is wrong), 2 usage.
"""

from __future__ import annotations

import argparse
import sys

from kinema.robot_data.sim import RenderBackendError

from .._version import __version__
from ..training._loop import TrainingDiverged
from . import _demo, _drone, _generate, _merge_lora, _play, _scan, _train, _vace_e

COMMANDS = [
    _generate,
    _train,
    _merge_lora,
    _scan,
    _vace_e,
    _play,
    _drone,
    _demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinema-wm",
        description="Wan2.2-TI2V steered by per-frame drone actions: generate, train, inspect.",
        epilog="Run 'kinema-wm COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        FileNotFoundError,
        FileExistsError,
        ValueError,
        ImportError,
        RenderBackendError,
        TrainingDiverged,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
