"""``mlpot evaluate``: errors of a trained model on labelled structures, with parity plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlpot.cli.common import add_device_options, add_label_options, label_spec_from_args, labels_in_first_frame


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="print the errors of a model on labelled structures and write parity plots",
        description=(
            "Predict the labelled structures of DATA and print MAE and RMSE of energy (meV/atom and meV), "
            "forces (meV/Å), stress (meV/Å³) and dipole (e·Å and Debye), for the labels DATA carries."
        ),
    )
    parser.add_argument("model", help="model file written by mlpot train (model.pt)")
    parser.add_argument("data", help="structure file: any format ASE reads, or rMD17-style npz; bundled:NAME for a bundled dataset")
    parser.add_argument("--labels", help="comma-separated labels to compare (default: those of the first structure)")
    parser.add_argument("--plots", metavar="DIR", help="folder for the parity plots (default: NAME_parity/ in the current folder, NAME being DATA's file name without extension)")
    parser.add_argument("--no-plots", action="store_true", help="write no parity plots")
    add_device_options(parser)
    add_label_options(parser)


def run(args: argparse.Namespace) -> int:
    from mlpot.config import resolve_data_path
    from mlpot.data.io import read_structures
    from mlpot.evaluation import format_errors, parity_plots, predict
    from mlpot.models.io import load_model

    data = resolve_data_path(args.data)
    spec = label_spec_from_args(args)
    potential = load_model(args.model, device=args.device)
    if args.labels:
        labels = tuple(label.strip() for label in args.labels.split(",") if label.strip())
    else:
        labels = labels_in_first_frame(str(data), spec)
    structures = read_structures(data, labels, spec, elements=potential.elements)
    predictions, errors = predict(potential, structures, args.batch_size, args.device, progress=True)
    print(f"{len(structures)} structures from {args.data}, model {args.model}")
    if not errors:
        print(f"no labels to compare: {args.data} has none of energy, forces, stress, dipole under the given keys")
        return 0
    print(format_errors(errors))
    if not args.no_plots:
        folder = Path(args.plots) if args.plots else Path(data.stem + "_parity")
        for path in parity_plots(structures, predictions, folder):
            print(f"parity plot written to {path}")
    return 0
