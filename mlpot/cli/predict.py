"""``mlpot predict``: write a model's energies, forces, stress and dipoles for a file of structures."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mlpot.cli.common import add_device_options, add_label_options, label_spec_from_args, make_output_safe, plural

#: Units of the written predictions, also stored in each frame as ``mlpot_units``.
UNITS_NOTE = "energy:eV forces:eV/A stress:eV/A^3 dipole:e*A charges:e"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict energies, forces, stress and dipoles for a file of structures",
        description=(
            "Predict every structure of DATA and write an extxyz file with the input frames plus "
            "PREFIXenergy (eV), PREFIXforces (eV/Å), PREFIXstress (eV/Å³, 3x3, periodic frames only), "
            "PREFIXdipole (e·Å) and PREFIXcharges (e) when the model has a dipole head."
        ),
    )
    parser.add_argument("model", help="model file written by mlpot train (model.pt)")
    parser.add_argument("data", help="structure file: any format ASE reads, or rMD17-style npz; bundled:NAME for a bundled dataset")
    parser.add_argument("-o", "--output", required=True, help="extxyz file to write")
    parser.add_argument("--prefix", default="mlpot_", help="prefix of the predicted fields (default mlpot_)")
    add_device_options(parser)
    add_label_options(parser)


def run(args: argparse.Namespace) -> int:
    import ase.io

    from mlpot import keys
    from mlpot.config import resolve_data_path
    from mlpot.data.io import read_structures
    from mlpot.devices import resolve_device
    from mlpot.evaluation import predict
    from mlpot.models.io import load_model

    make_output_safe()
    device = resolve_device(args.device)
    potential = load_model(args.model, device=device)
    structures = read_structures(resolve_data_path(args.data), (), label_spec_from_args(args), elements=potential.elements)
    predictions, _ = predict(potential, structures, args.batch_size, device, progress=True)

    frames = []
    for structure, predicted in zip(structures, predictions):
        atoms = structure.atoms.copy()
        atoms.calc = None
        atoms.info[args.prefix + "energy"] = float(predicted[keys.ENERGY])
        atoms.arrays[args.prefix + "forces"] = predicted[keys.FORCES]
        if keys.STRESS in predicted:
            atoms.info[args.prefix + "stress"] = predicted[keys.STRESS].reshape(9)
        if keys.DIPOLE in predicted:
            atoms.info[args.prefix + "dipole"] = predicted[keys.DIPOLE]
            atoms.arrays[args.prefix + "charges"] = predicted[keys.CHARGES]
        atoms.info["mlpot_units"] = UNITS_NOTE
        frames.append(atoms)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(handle)
    try:
        ase.io.write(temporary, frames, format="extxyz")
        os.replace(temporary, output)
    finally:
        Path(temporary).unlink(missing_ok=True)
    print(f"predictions for {plural(len(frames), 'structure')} written to {output}")
    return 0
