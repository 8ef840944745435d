"""kinema-conditioning: inspect the injectors of a trained checkpoint.

Exit codes: 0 ok, 1 failure (unreadable file, no injector found), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._inspect import inspect_checkpoint, reports_as_dicts
from ._version import __version__

_EXAMPLES = """examples:
  kinema-conditioning inspect runs/wm/action_controller.safetensors
  kinema-conditioning inspect model.safetensors --json report.json
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinema-conditioning",
        description="Tools for kinema's condition injectors.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inspect = commands.add_parser(
        "inspect",
        help="list injector parameters, output scales and modulation norms of a safetensors checkpoint",
        description=(
            "Lists the injector parameters found in CHECKPOINT, their per-layer output scales and their "
            "gate/modulation norms. A norm or scale near 0 means the model does not use its condition."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.safetensors")
    inspect.add_argument(
        "--json", type=Path, metavar="REPORT", help="also write the report as JSON to REPORT"
    )
    return parser


def _format_scales(scales: list[float]) -> str:
    if not scales:
        return "-"
    if len(scales) <= 4:
        return ", ".join(f"{s:.4g}" for s in scales)
    return f"{len(scales)} layers, min {min(scales):.4g}, max {max(scales):.4g}"


def _inspect(args: argparse.Namespace) -> int:
    try:
        reports = inspect_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if not reports:
        print(f"error: no injector parameters found in {args.checkpoint}", file=sys.stderr)
        return 1
    header = f"{'injector':<40} {'kind':<11} {'params':>10}  {'output scale':<34} norms"
    print(header)
    print("-" * len(header))
    for r in reports:
        norms = ", ".join(f"{k}={v:.4g}" for k, v in r.norms.items())
        state = "" if r.active else "   <- inactive: the condition has no effect"
        print(
            f"{r.name:<40} {r.kind:<11} {r.num_parameters:>10}  {_format_scales(r.output_scales):<34} {norms}{state}"
        )
    schemes = sorted({r.injection_type for r in reports if r.injection_type is not None})
    if schemes:  # the other heads of such a controller are never called: they are not listed
        print(
            f"\ninjection_type={', '.join(schemes)} (from the file's metadata): only the injector it uses is listed"
        )
    inactive = sum(not r.active for r in reports)
    print(f"\n{len(reports)} injector(s), {inactive} inactive")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(reports_as_dicts(reports), indent=2))
        tmp.replace(args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inspect":
        return _inspect(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
