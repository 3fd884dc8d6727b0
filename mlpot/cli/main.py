"""The ``mlpot`` command: parses the subcommand, configures logging and reports errors."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from mlpot import __version__
from mlpot.cli import evaluate, md, predict, train
from mlpot.cli.common import make_output_safe
from mlpot.errors import MLPotError
from mlpot.training.processes import is_ddp_child

#: Subcommand modules; each has ``add_parser(subparsers)`` and ``run(args) -> int``.
COMMANDS = {"train": train, "evaluate": evaluate, "predict": predict, "md": md}


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``mlpot`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog="mlpot",
        description="Machine-learning interatomic potentials for molecules. Units: Å, eV, eV/Å, eV/Å³, e·Å.",
    )
    parser.add_argument("--version", action="version", version=f"mlpot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def format_warning(message, category, filename, lineno, line=None) -> str:
    """Format a Python warning as ``<Category>: <message>``, without the source path and line.

    The command line installs this as :func:`warnings.formatwarning`; with logging's format the
    warning prints as ``WARNING: StatisticsWarning: ...``.
    """
    return f"{category.__name__}: {message}"


def configure_logging(debug: bool) -> None:
    """Send log records and Python warnings to stderr; only the command line does this.

    Without ``debug``, warnings print without their source line, and DDP processes of a rank
    other than 0 log warnings and errors only, since they would repeat every INFO line of rank 0.
    """
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if debug else "%(levelname)s: %(message)s",
    )
    logging.captureWarnings(True)
    if not debug:
        warnings.formatwarning = format_warning
        if is_ddp_child():
            logging.getLogger().setLevel(logging.WARNING)
        # Lightning's start-up notes (accelerators found, advertisements) are noise at the INFO level.
        logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=".*treespec.*")


def main(argv: list[str] | None = None) -> int:
    """Run the ``mlpot`` command line and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Help texts, tables and errors print units such as Å, which an ASCII console cannot encode.
    make_output_safe()
    parser = build_parser()
    # --debug is accepted after the subcommand too.
    debug = "--debug" in argv
    args = parser.parse_args([item for item in argv if item != "--debug"])
    args.debug = debug
    configure_logging(debug)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command].run(args)
    except (MLPotError, OSError) as error:  # OSError: a path, permission or disk problem, not a bug
        if debug:
            raise
        print(f"mlpot {args.command}: error: {error}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if not is_ddp_child():
            print(f"mlpot {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
