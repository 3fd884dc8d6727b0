"""``mlpot evaluate``: errors of a trained model on labelled structures, with parity plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlpot import keys
from mlpot.cli.common import (
    FirstFrameLabels,
    add_device_options,
    add_label_options,
    label_spec_from_args,
    labels_in_first_frame,
    make_output_safe,
    plural,
)
from mlpot.data.labels import LabelSpec
from mlpot.errors import MissingLabelError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="print the errors of a model on labelled structures and write parity plots",
        description=(
            "Predict the labelled structures of DATA and print MAE and RMSE of energy (meV/atom and meV), "
            "forces (meV/Å), stress (meV/Å³) and dipole (e·Å and Debye), for the labels DATA carries. "
            "It prints which labels were compared under which keys, and which were not found."
        ),
    )
    parser.add_argument("model", help="model file written by mlpot train (model.pt)")
    parser.add_argument("data", help="structure file: any format ASE reads, or rMD17-style npz; bundled:NAME for a bundled dataset")
    parser.add_argument(
        "--labels",
        help="comma-separated labels to compare, of energy, forces, stress, dipole; every structure must have them "
        "(default: those the first structure has under the --energy-key, --forces-key, ... names)",
    )
    parser.add_argument("--plots", metavar="DIR", help="folder for the parity plots (default: NAME_parity/ in the current folder, NAME being DATA's file name without extension)")
    parser.add_argument("--no-plots", action="store_true", help="write no parity plots")
    add_device_options(parser)
    add_label_options(parser)


def run(args: argparse.Namespace) -> int:
    from mlpot.config import resolve_data_path
    from mlpot.data.io import read_structures
    from mlpot.devices import resolve_device
    from mlpot.errors import DataError
    from mlpot.evaluation import format_errors, parity_plots, predict
    from mlpot.models.io import load_model

    make_output_safe()
    data = resolve_data_path(args.data)
    spec = label_spec_from_args(args)
    device = resolve_device(args.device)
    potential = load_model(args.model, device=device)
    survey = None
    if args.labels:
        labels = tuple(label.strip() for label in args.labels.split(",") if label.strip())
    else:
        survey = labels_in_first_frame(str(data), spec)
        labels = survey.found
    try:
        structures = read_structures(data, labels, spec, elements=potential.elements)
    except MissingLabelError as error:
        raise DataError(missing_label_message(error, labels)) from None
    predictions, errors = predict(potential, structures, args.batch_size, device, progress=True)
    print(f"{plural(len(structures), 'structure')} from {args.data}, model {args.model}")
    for line in label_report(labels, errors, spec, survey, has_dipole_head=potential.dipole_head is not None):
        print(line)
    if not errors:
        print(f"no labels to compare: {args.data} has none of energy, forces, stress, dipole that the model predicts")
        return 0
    print(format_errors(errors))
    if not args.no_plots:
        folder = Path(args.plots) if args.plots else Path(data.stem + "_parity")
        for path in parity_plots(structures, predictions, folder):
            print(f"parity plot written to {path}")
    return 0


def _flag(label: str) -> str:
    return f"--{label}-key"


def missing_label_message(error: MissingLabelError, labels: tuple[str, ...]) -> str:
    """Rewrite the message of a MissingLabelError with the options of ``mlpot evaluate``."""
    others = [label for label in labels if label != error.label]
    advice = f"Set {_flag(error.label)} to the name this file uses for {error.label}"
    if others:
        advice += f", or compare only the other labels with --labels {','.join(others)}"
    return f"{error.where}: label {error.key!r} ({error.label}) is missing; this frame has {error.available}. {advice}"


def label_report(
    labels: tuple[str, ...],
    errors: dict,
    spec: LabelSpec,
    survey: FirstFrameLabels | None,
    has_dipole_head: bool,
) -> list[str]:
    """Return lines naming the compared labels with their keys, and the labels left out with the reason.

    ``survey`` is the first-frame lookup that chose ``labels``, or None when --labels chose them.
    """
    compared = [label for label in labels if label in errors or (label == keys.ENERGY and "energy_per_atom" in errors)]
    lines = []
    if compared:
        lines.append("compared: " + ", ".join(f"{label} (key {spec.key_of(label)!r})" for label in compared))

    for label in labels:
        if label in compared:
            continue
        if label == keys.DIPOLE and not has_dipole_head:
            reason = "the model has no dipole head"
        elif label == keys.STRESS:
            reason = "no structure is periodic with a cell"
        else:
            reason = "the model predicts no such quantity"
        lines.append(f"not compared: {label} (key {spec.key_of(label)!r}) is in the file, but {reason}")

    if survey is not None and survey.missing:
        tried = ", ".join(f"{label} (key {spec.key_of(label)!r})" for label in survey.missing)
        flags = ", ".join(_flag(label) for label in survey.missing)
        names = ", ".join(survey.names) if survey.names else "none"
        lines.append(
            f"not found in the first structure: {tried}. Its entries are: {names}. "
            f"To compare {'it' if len(survey.missing) == 1 else 'them'}, set {flags} to the names this file uses"
        )
    return lines
