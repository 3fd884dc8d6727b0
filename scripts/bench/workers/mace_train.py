"""Run MACE's training command line (mace_run_train) with a wall-time budget on its training loop.

Usage: python -m bench.workers.mace_train --budget-seconds S -- [mace_run_train arguments]

MACE 0.3.16 has no wall-time limit of its own. This wrapper runs ``mace.cli.run_train.main``
in-process and checks the clock before every optimiser step. The budget counts from the start
of the training loop, so MACE's initial validation is included. Once it is spent, the loop
stops mid-epoch and run_train goes on as after its last epoch. It reloads the latest
checkpoint and saves it as ``<name>.model``. MACE writes that checkpoint, with the averaged
(EMA) weights, whenever the validation loss improves. Without --budget-seconds the run is an
ordinary mace_run_train.

Output lines for the benchmark: ``BENCH_TRAINING_START``, then ``BENCH_BUDGET_REACHED {json}``
when the budget stopped the loop. MACE's own log lines carry the per-epoch validation errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


class BudgetReached(Exception):
    """Raised before an optimiser step once the training budget is spent."""


def install_budget(budget_seconds: float | None) -> dict:
    """Wrap MACE's training loop and optimiser step so that the budget stops the loop.

    Returns the mutable state of the wrappers: ``deadline`` and the count of ``steps`` taken.
    """
    import mace.tools as tools
    import mace.tools.train  # noqa: F401  (the module, shadowed by the function of the same name)

    train_module = sys.modules["mace.tools.train"]
    state = {"deadline": None, "steps": 0, "start": None, "budget_reached": False}
    original_step = train_module.take_step
    original_train = tools.train

    def take_step_within_budget(*args, **kwargs):
        if state["deadline"] is not None and time.monotonic() > state["deadline"]:
            raise BudgetReached
        state["steps"] += 1
        return original_step(*args, **kwargs)

    def train_within_budget(*args, **kwargs):
        state["start"] = time.monotonic()
        if budget_seconds:
            state["deadline"] = state["start"] + budget_seconds
        print("BENCH_TRAINING_START", flush=True)
        try:
            return original_train(*args, **kwargs)
        except BudgetReached:
            state["budget_reached"] = True
            report = {"seconds": time.monotonic() - state["start"], "steps": state["steps"]}
            print("BENCH_BUDGET_REACHED " + json.dumps(report), flush=True)
            return None

    train_module.take_step = take_step_within_budget
    # run_train calls tools.train through the package attribute, so replacing it there suffices.
    tools.train = train_within_budget
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, help="wall-time budget of the training loop in seconds")
    parser.add_argument("mace_arguments", nargs=argparse.REMAINDER, help="arguments of mace_run_train, after --")
    args = parser.parse_args()
    mace_arguments = args.mace_arguments[1:] if args.mace_arguments[:1] == ["--"] else args.mace_arguments

    from mace.cli import run_train

    state = install_budget(args.budget_seconds)
    sys.argv = ["mace_run_train", *mace_arguments]
    try:
        run_train.main()
    except Exception as error:  # run_train raises many types; only the cases below are expected.
        if not state["budget_reached"]:
            raise
        model = stage_one_model(mace_arguments)
        if not model.is_file():
            # run_train fails to save a model when no epoch finished, because no checkpoint exists.
            print(f"BENCH_NO_EPOCH no epoch finished within the budget, so MACE wrote no checkpoint ({error!r})")
            sys.exit(3)
        if "--swa" not in mace_arguments:
            raise
        # With --swa, run_train also evaluates a stage-two checkpoint, and fails when the budget
        # ended the run before stage two started. The stage-one model is already saved by then.
        print(f"BENCH_NOTE stage two (SWA) not reached within the budget; {model} is the stage-one model ({error!r})")


def stage_one_model(mace_arguments: list[str]) -> Path:
    """Return where run_train saves the stage-one model: MODEL_DIR/NAME.model."""
    values = {"model_dir": "."}
    for argument in mace_arguments:
        key, separator, value = argument.removeprefix("--").partition("=")
        if separator:
            values[key] = value
    return Path(values["model_dir"]) / f"{values.get('name', 'MACE_model')}.model"


if __name__ == "__main__":
    main()
