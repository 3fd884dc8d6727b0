"""``mlpot train``: train a potential from a YAML config, with any key overridden by a flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from mlpot.config import BUNDLED_PREFIX, SECTIONS, Config, load_config, resolve_data_path, set_key

logger = logging.getLogger(__name__)

#: Config used when ``mlpot train`` gets neither a config file nor a training file.
DEMO_CONFIG = BUNDLED_PREFIX + "configs/acetylacetone.yaml"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a potential",
        description=(
            "Train a potential. Without CONFIG and --train-file, trains a small demonstration model on the "
            f"bundled acetylacetone data ({DEMO_CONFIG}). Every config key is also a flag; flags override the file."
        ),
    )
    parser.add_argument(
        "config",
        nargs="?",
        help="YAML config file with sections data, model, training; bundled:configs/NAME.yaml names an example shipped with mlpot",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the interrupted run in run folder DIR with its config.yaml; flags may change only the run "
        "length and hardware keys listed in docs/training.md",
    )
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for item in dataclasses.fields(cls):
            help_text = item.metadata["help"]
            if item.metadata.get("unit"):
                help_text += f" Unit: {item.metadata['unit']}."
            flag = "--" + item.name.replace("_", "-")
            if item.type in ("bool", "bool | None", bool):
                # "--dipole" alone means true; "--dipole false" is accepted too.
                group.add_argument(flag, dest=f"key_{item.name}", metavar="BOOL", nargs="?", const="true", help=help_text)
            else:
                group.add_argument(flag, dest=f"key_{item.name}", metavar="VALUE", help=help_text)


def build_config(args: argparse.Namespace) -> Config:
    """Merge the config file (or the resumed run's config, or the demonstration config) with the flags.

    The keys that a resumed run may change are checked by :func:`mlpot.training.run.train`.
    """
    from mlpot.errors import ConfigError
    from mlpot.training.resume import load_run_config

    overrides = {name[4:]: value for name, value in vars(args).items() if name.startswith("key_") and value is not None}
    if args.resume:
        if args.config:
            raise ConfigError(
                f"give either CONFIG ({args.config}) or --resume, not both: a resumed run reads its own "
                f"{Path(args.resume) / 'config.yaml'}; pass changes of the run length as flags"
            )
        output = overrides.pop("output", None)
        if output is not None and Path(output) != Path(args.resume):
            raise ConfigError(
                f"--output {output} and --resume {args.resume} name different folders; a resumed run stays in "
                "its folder, so leave out --output"
            )
        config = load_run_config(Path(args.resume))
    elif args.config:
        config = load_config(resolve_data_path(args.config))
    elif "train_file" in overrides:
        config = Config()
    else:
        logger.info("no config file or --train-file given: training the demonstration model of %s", DEMO_CONFIG)
        config = load_config(resolve_data_path(DEMO_CONFIG))
    for key, value in overrides.items():
        set_key(config, key, value)
    return config


def _file_state(path: Path) -> tuple[int, int] | None:
    """Return the modification time and size of ``path``, or None when it does not exist."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_size


def run(args: argparse.Namespace) -> int:
    from mlpot.errors import ConfigError
    from mlpot.training.processes import is_ddp_child
    from mlpot.training.resume import MODEL_NAME
    from mlpot.training.run import train

    config = build_config(args)
    if not config.data.train_file:
        raise ConfigError("no training data: set train_file in the config or pass --train-file FILE")
    # A resumed run with nothing left to train keeps its model file.
    before = _file_state(Path(args.resume) / MODEL_NAME) if args.resume else None
    model_path = train(config, resume=args.resume)
    if not is_ddp_child():
        if before is not None and _file_state(model_path) == before:
            print(f"Model unchanged: {model_path}")
        else:
            print(f"Model written to {model_path}")
    return 0
