"""``mlpot train``: train a potential from a YAML config, with any key overridden by a flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
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
    parser.add_argument("--resume", metavar="DIR", help="continue the interrupted run in run folder DIR")
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        for item in dataclasses.fields(cls):
            help_text = item.metadata["help"]
            if item.metadata.get("unit"):
                help_text += f" Unit: {item.metadata['unit']}."
            flag = "--" + item.name.replace("_", "-")
            if item.type in ("bool", bool):
                # "--dipole" alone means true; "--dipole false" is accepted too.
                group.add_argument(flag, dest=f"key_{item.name}", metavar="BOOL", nargs="?", const="true", help=help_text)
            else:
                group.add_argument(flag, dest=f"key_{item.name}", metavar="VALUE", help=help_text)


def build_config(args: argparse.Namespace) -> Config:
    """Merge the config file (or the resumed run's config, or the demonstration config) with the flags."""
    from mlpot.training.run import load_run_config

    overrides = {name[4:]: value for name, value in vars(args).items() if name.startswith("key_") and value is not None}
    if args.resume:
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


def run(args: argparse.Namespace) -> int:
    from mlpot.errors import ConfigError
    from mlpot.training.run import train

    config = build_config(args)
    if not config.data.train_file:
        raise ConfigError("no training data: set train_file in the config or pass --train-file FILE")
    model_path = train(config, resume=args.resume)
    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
        print(f"Model written to {model_path}")
    return 0
