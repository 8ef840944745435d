"""kinema-data: check, describe and summarize kinema datasets.

Exit codes: 0 ok, 1 failure (bad items found, unreadable dataset), 2 usage.

Subcommands are registered by functions ``register(commands)`` that add a subparser to ``commands`` (the
argparse sub-parsers object) and set its ``handler`` (``args -> exit code``); :data:`REGISTRARS` lists them, so
another module adds a command by appending its own ``register`` function.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ._detect import VACE_E, DetectedDataset, detect_format
from ._errors import RobotDataError
from ._inspect import STATS_FILE_NAMES, dataset_stats, inspect_dataset
from ._stats import save_stats
from ._validate import ERROR, OK, WARNING, ValidationReport, validate_dataset
from ._version import __version__
from .sim._commands import add_sim_commands

Registrar = Callable[[argparse._SubParsersAction], None]


class UsageError(Exception):
    """A command line that cannot work as given (exit code 2)."""


def _subparser(commands, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="dataset folder, episode .hdf5 or metadata .csv"
    )
    parser.add_argument(
        "--metadata", type=Path, metavar="FILE", help="VACE-E task metadata JSON (or an action-video CSV)"
    )
    parser.add_argument(
        "--num-frames",
        type=int,
        metavar="N",
        help="frames per clip (4n+1); default: inferred from the action lengths (action-video), 81 (VACE-E)",
    )


def _detect(args: argparse.Namespace) -> DetectedDataset:
    dataset = detect_format(args.path, args.metadata)
    if dataset.format == VACE_E and dataset.metadata is None:
        raise UsageError(
            f"{args.path} holds VACE-E episodes: pass their task metadata JSON with --metadata FILE"
        )
    return dataset


def _shorten(path: str, root: str) -> str:
    try:
        relative = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def print_report(report: ValidationReport, strict: bool) -> None:
    """The table of items: status, path (relative to the dataset), field and reason."""
    root = report.path if Path(report.path).is_dir() else str(Path(report.path).parent)
    rows = [
        (
            item.status,
            _shorten(item.path, root),
            f"{item.field}: {item.reason}" if item.field else item.reason,
        )
        for item in report.items
    ]
    rows.sort(key=lambda r: ({ERROR: 0, WARNING: 1, OK: 2}[r[0]], r[1]))
    width = min(max((len(r[1]) for r in rows), default=4), 70)
    print(f"{report.format} dataset at {report.path}")
    for note in report.notes:
        print(f"note: {note}")
    print(f"{'status':<8} {'path':<{width}}  reason")
    print("-" * (8 + width + 10))
    for status, path, reason in rows:
        print(f"{status:<8} {path:<{width}}  {reason}")
    counts = f"{report.count(OK)} ok, {report.count(WARNING)} warning(s), {report.count(ERROR)} error(s)"
    verdict = "PASSED" if report.passed(strict) else "FAILED"
    if not report.items:
        verdict += " (no item found)"
    print(f"\n{verdict}: {counts}" + (" (strict: warnings fail)" if strict else ""))


def _is_shard_folder(path: Path) -> bool:
    return path.is_dir() and (path / "index.json").is_file() and any(path.glob("shard-*.tar"))


def _validate(args: argparse.Namespace) -> int:
    if _is_shard_folder(args.path):
        from .shards import validate_shards

        report = validate_shards(args.path, deep=args.deep)
    else:
        report = validate_dataset(_detect(args), num_frames=args.num_frames, deep=args.deep)
    print_report(report, args.strict)
    if args.json is not None:
        report.write_json(args.json, strict=args.strict)
        print(f"report written to {args.json}")
    return 0 if report.passed(args.strict) else 1


def register_validate(commands) -> None:
    parser = _subparser(
        commands,
        "validate",
        "check every episode or row of a dataset and list what is wrong",
        "Detects the format of PATH (policy episodes, kinema's or the original ACT / ALOHA recorders' HDF5; "
        "action-video CSV; VACE-E episodes; LeRobot v3.0 / v2.1 folders; shard folders of `kinema-data shard`), checks "
        "every item "
        "(files present and readable, videos decodable to their last frame, shapes, NaN/Inf, lengths, task ids) "
        "and prints a table of items with the reason for each problem. Exit code 1 when anything is wrong.",
        "  kinema-data validate data/transfer_cube\n"
        "  kinema-data validate data/drone --json report.json\n"
        "  kinema-data validate act_data/sim_transfer_cube_scripted   # ACT's record_sim_episodes.py output\n"
        "  kinema-data validate data/vace_e --metadata ph2d_metadata.json --strict\n"
        "  kinema-data validate shards/drone --deep   # a shard folder: every shard, every sample's members\n",
    )
    _dataset_arguments(parser)
    parser.add_argument("--strict", action="store_true", help="warnings (e.g. a video-only episode) fail too")
    parser.add_argument("--json", type=Path, metavar="REPORT", help="also write the report as JSON to REPORT")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="policy episodes: decompress every image, not the last; shards: decode every video to its last frame",
    )
    parser.set_defaults(handler=_validate)


def _inspect(args: argparse.Namespace) -> int:
    lines = inspect_dataset(_detect(args), num_frames=args.num_frames)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")
    return 0


def register_inspect(commands) -> None:
    parser = _subparser(
        commands,
        "inspect",
        "counts, lengths, fps, tasks, embodiments and action statistics of a dataset",
        "Prints what a dataset holds. Unreadable items are counted, not listed (use validate for that).",
        "  kinema-data inspect data/transfer_cube\n  kinema-data inspect data/drone/metadata.csv\n",
    )
    _dataset_arguments(parser)
    parser.set_defaults(handler=_inspect)


def _stats(args: argparse.Namespace) -> int:
    dataset = _detect(args)
    stats = dataset_stats(dataset, num_frames=args.num_frames)
    out = args.out
    if out is None:
        folder = dataset.root if dataset.root.is_dir() else dataset.root.parent
        out = folder / STATS_FILE_NAMES[dataset.format]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_stats(stats, out)
    for name, values in stats.items():
        print(f"{name}: {values['count']} rows, {values['mean'].shape[0]} dims")
    print(f"statistics written to {out}")
    return 0


def register_stats(commands) -> None:
    parser = _subparser(
        commands,
        "stats",
        "compute normalization statistics and write them (beside the dataset unless --out)",
        "Computes mean, std (clipped at 0.01), min, max and the 1st/99th percentiles per dimension and writes them "
        "as JSON: policy episodes -> policy_stats.json (qpos, action; qvel, environment_state when present), "
        "action-video -> action_stats.json, VACE-E -> vace_e_stats.json. The only command that writes beside a dataset.",
        "  kinema-data stats data/transfer_cube\n  kinema-data stats data/transfer_cube --out runs/act/stats.json\n",
    )
    _dataset_arguments(parser)
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="where to write (default: beside the dataset)"
    )
    parser.set_defaults(handler=_stats)


def _export_lerobot(args: argparse.Namespace) -> int:
    from .lerobot import export_lerobot

    if args.out.exists():
        raise UsageError(f"OUT {args.out} already exists; choose a new folder")
    out = export_lerobot(args.src, args.out, progress=not args.no_progress)
    print(f"LeRobot v3.0 dataset written to {out}")
    return 0


def register_export_lerobot(commands) -> None:
    parser = _subparser(
        commands,
        "export-lerobot",
        "write kinema policy episodes (HDF5) as a LeRobot v3.0 dataset folder",
        "Reads every policy episode of SRC (kinema's HDF5, or the ACT / ALOHA recorders') and writes OUT as a "
        "LeRobot v3.0 dataset: meta/info.json, stats.json, tasks.parquet, meta/episodes, data parquet and one H.264 "
        "mp4 per camera. qpos -> observation.state, qvel -> observation.velocity, action -> action, "
        "environment_state -> observation.environment_state, images/<cam> -> observation.images.<cam>. OUT must not "
        "exist; it appears only when complete. Needs pyarrow.",
        "  kinema-data export-lerobot data/transfer_cube exports/transfer_cube_lerobot\n",
    )
    parser.add_argument(
        "src", type=Path, metavar="SRC", help="folder of policy episodes (*.hdf5) or one episode"
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="the LeRobot dataset folder to create")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_export_lerobot)


def _shard(args: argparse.Namespace) -> int:
    from .shards import write_action_video_shards, write_vace_e_shards

    limits = {"max_shard_bytes": int(args.max_shard_mb * 2**20), "max_shard_samples": args.max_shard_samples}
    common = {"strict": args.strict, "progress": not args.no_progress} | limits
    if detect_format(args.path, args.metadata).format == VACE_E:
        if args.metadata is None:
            raise UsageError(
                f"{args.path} holds VACE-E episodes: pass their task metadata JSON with --metadata FILE"
            )
        index = write_vace_e_shards(args.path, args.metadata, args.out, **common)
    else:
        index = write_action_video_shards(
            args.path, args.out, metadata_path=args.metadata, data_file_keys=args.data_file_keys, **common
        )
    print(
        f"{index.samples} samples in {len(index.shards)} shards written to {args.out} (index: {args.out}/index.json)"
    )
    if index.skipped:
        print(
            f"{len(index.skipped)} item(s) left out (listed in the index; --strict stops at the first instead)"
        )
    return 0


def register_shard(commands) -> None:
    parser = _subparser(
        commands,
        "shard",
        "write an action-video dataset or VACE-E episodes into WebDataset tar shards (resumable)",
        "Writes every row of PATH's metadata CSV (action-video: video.mp4 as stored, prompt.txt, action.json, "
        "meta.json, one member per extra file column), or every VACE-E episode of PATH (its videos, trajectories "
        "and embodiment image as stored; the task metadata JSON given with --metadata is copied beside the index), "
        "as one WebDataset sample into OUT/shard-000000.tar, ... and OUT/index.json (samples per shard and what a "
        "reader needs to plan its windows, the source's statistics). Each shard appears only when whole; run the "
        "same command again after an interruption to go on. Read the shards with "
        "kinema.robot_data.shards.ShardedActionVideoDataset / ShardedVaceEEpisodeDataset or any WebDataset reader.",
        "  kinema-data shard data/drone shards/drone\n"
        "  kinema-data shard data/drone shards/drone --max-shard-mb 1024 --data-file-keys video,depth\n"
        "  kinema-data shard data/vace_e shards/vace_e --metadata ph2d_metadata.json\n"
        "  kinema-data validate shards/drone\n",
    )
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="action-video dataset folder (metadata.csv + files)"
    )
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="the shard folder (created; an unfinished one goes on)"
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        metavar="FILE",
        help="action-video: the CSV (default: PATH/metadata.csv); VACE-E: the task metadata JSON (required)",
    )
    parser.add_argument(
        "--data-file-keys",
        default="video",
        metavar="COLS",
        help="comma-separated file columns (default: video)",
    )
    parser.add_argument(
        "--max-shard-mb", type=float, default=512, metavar="MB", help="shard size limit (512)"
    )
    parser.add_argument("--max-shard-samples", type=int, metavar="N", help="samples per shard limit (none)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad row instead of leaving it out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_shard)


REGISTRARS: list[Registrar] = [
    register_validate,
    register_inspect,
    register_stats,
    register_export_lerobot,
    register_shard,
    add_sim_commands,
]
"""Functions that add subcommands; append to it (before calling :func:`main`) to add one."""


def build_parser(registrars: list[Registrar] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kinema-data",
        description="Check, describe and summarize kinema datasets (policy episodes, action-video clips, VACE-E).",
        epilog="examples:\n  kinema-data validate data/transfer_cube\n  kinema-data inspect data/drone\n"
        "  kinema-data stats data/transfer_cube\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS if registrars is None else registrars:
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"kinema-data {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (RobotDataError, ValueError) as error:
        print(f"kinema-data {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
