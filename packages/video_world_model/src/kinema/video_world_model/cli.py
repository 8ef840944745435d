"""kinema-wm: the action-conditioned Wan world model's command line.

Exit codes: 0 ok, 1 failure (a file, a model or the data is wrong), 2 usage.
"""

from __future__ import annotations

import argparse
import sys

from kinema.robot_data.sim import RenderBackendError

from . import _cli_demo, _cli_drone, _cli_generate, _cli_merge_lora, _cli_play, _cli_scan, _cli_train
from ._trainer import TrainingDiverged
from ._version import __version__
from .vace_e import _cli as _cli_vace_e

COMMANDS = [
    _cli_generate,
    _cli_train,
    _cli_merge_lora,
    _cli_scan,
    _cli_vace_e,
    _cli_play,
    _cli_drone,
    _cli_demo,
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


if __name__ == "__main__":
    sys.exit(main())
