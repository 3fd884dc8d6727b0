"""ASE calculator for mlpot potentials.

Units follow ASE: energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz,
xz, xy, positive under tension as in ASE), dipole in e·Å about the origin of the coordinates,
charges in e.

For molecular dynamics the calculator can keep its neighbour list between steps: with ``skin``
> 0 the list is built with the radius cutoff + skin and reused while no atom has moved more
than skin / 2 from where it was when the list was built, and while cell, periodicity and atomic
numbers stay the same. Two atoms that end up closer than the cutoff were then closer than
cutoff + skin when the list was built, so no pair inside the cutoff is missed. Before each
evaluation the pairs that are now farther apart than the cutoff are dropped, so the model gets
the same pairs as from a new list. Those pairs would contribute exactly zero anyway, because the
cutoff envelope of the model is zero there, but they would cost time.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import ase
import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlpot import keys
from mlpot.data.graph import AtomicGraph
from mlpot.data.neighbours import neighbour_list
from mlpot.data.validation import MIN_DISTANCE, check_elements, symbol
from mlpot.memory import retain_freed_memory
from mlpot.devices import resolve_device
from mlpot.errors import DataError, MLPotError
from mlpot.models.potential import DTYPES, Potential

#: Prefix of the errors about a structure, which ASE does not name.
WHERE = "structure given to MLPotCalculator"

#: Cells with a smaller volume (Å³) than this have no stress.
MIN_CELL_VOLUME = 1e-6


class MLPotCalculator(Calculator):
    """ASE calculator that evaluates an mlpot :class:`~mlpot.models.potential.Potential`.

    Properties and units:

    - ``energy`` and ``free_energy``: eV, the same value;
    - ``energies``: (n_atoms,) eV per atom;
    - ``forces``: (n_atoms, 3) eV/Å;
    - ``stress``: (6,) eV/Å³ in Voigt order, for structures with at least one periodic direction
      and a cell of nonzero volume;
    - ``dipole``: (3,) e·Å, and ``charges``: (n_atoms,) e, for a model with a dipole head.

    Asking for the stress of any other structure raises
    :class:`~ase.calculators.calculator.PropertyNotImplementedError`. So does asking for the
    dipole or charges of a model without a dipole head, with a message on how to train one.

    Every calculation checks the geometry as :func:`mlpot.data.validation.validate_structure`
    does for files, and raises :class:`~mlpot.errors.DataError` when positions or a periodic
    cell are not finite, or when two atoms (or an atom and a periodic image) are closer than
    :data:`~mlpot.data.validation.MIN_DISTANCE`. The distance check reuses the neighbour list's
    edges, so it adds no neighbour search. A NaN or infinite prediction also raises a DataError
    instead of reaching the caller.

    The total charge of a structure is ``atoms.info["charge"]`` when present, otherwise the sum of
    ``atoms.get_initial_charges()`` (zero unless set). It only affects models with a dipole head,
    whose charges are shifted to sum to it.

    After a change of positions (in-place edits included), cell, periodicity, atomic numbers,
    initial charges or ``info["charge"]``, the next request recomputes. Repeated requests without
    a change reuse the stored results.

    Args:
        model: a model file written by :func:`mlpot.save_model`, or a loaded potential. The
            calculator works on its own copy, so later changes to the potential do not reach it.
        device: torch device to evaluate on, such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``. An
            invalid or unavailable device raises :class:`~mlpot.errors.ConfigError`.
        dtype: ``"float32"``, ``"float64"`` or a torch dtype; ``None`` evaluates in the dtype the
            model was trained in (``potential.config.dtype``). Another dtype warns.
        skin: extra radius of the neighbour list in Å, which lets it be reused over several
            calls (see the module docstring). 0 builds a new list at the cutoff for every call.
        compile: run the energy network through :func:`torch.compile`. Compilation happens on
            the first call; if it fails, the calculator warns and uses the plain network. Forces
            need one backward pass through the compiled network, which torch supports, but not
            the second one that training on forces would need, so this is for inference only.
        retain_memory: make glibc's malloc keep freed memory for the rest of the process
            (:func:`mlpot.memory.retain_freed_memory`), so that each call reuses the memory of
            the one before instead of mapping it from the kernel again. This made a call on
            12,288 water atoms 3 times faster on CPU. The setting covers every allocation of the
            process, which then keeps its peak resident memory; pass False to leave malloc as it
            is. It does nothing on other C libraries than glibc.

    Attributes:
        model: the potential that is evaluated, in eval mode with frozen weights.
        neighbour_list_builds: how many times the neighbour list has been built.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "dipole", "charges"]

    def __init__(
        self,
        model: Potential | str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        skin: float = 0.0,
        compile: bool = False,
        retain_memory: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (isinstance(skin, (int, float)) and np.isfinite(skin) and skin >= 0):
            raise ValueError(f"skin must be a finite number of Å, 0 or more; got {skin!r}")
        self.device = resolve_device(device)
        potential = _potential_from(model, self.device)
        training_dtype = DTYPES[potential.config.dtype]
        self.dtype = _resolve_dtype(dtype, training_dtype)
        if self.dtype != training_dtype:
            warnings.warn(
                f"the model was trained in {potential.config.dtype} but is evaluated in "
                f"{str(self.dtype).removeprefix('torch.')}; its predictions may differ slightly from the "
                "training ones. Pass dtype=None to evaluate in the training dtype",
                UserWarning,
                stacklevel=2,
            )
        self.model = potential.to(device=self.device, dtype=self.dtype).eval()
        if retain_memory:
            retain_freed_memory()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

        self.cutoff = float(self.model.cutoff)
        self.skin = float(skin)
        self.elements = list(self.model.elements)
        if self.model.dipole_head is None:
            self.implemented_properties = [
                name for name in self.implemented_properties if name not in (keys.DIPOLE, keys.CHARGES)
            ]
        self.neighbour_list_builds = 0
        self._list_state: dict | None = None
        self._compile_pending = False
        if compile:
            self.model.energy_model = torch.compile(self.model.energy_model, dynamic=True)
            self._compile_pending = True

    @property
    def neighbour_list_edges(self) -> int:
        """Number of directed edges in the current neighbour list; 0 before the first call."""
        return 0 if self._list_state is None else int(self._list_state["edge_index"].shape[1])

    # Caching

    def check_state(self, atoms: ase.Atoms, tol: float = 1e-15) -> list[str]:
        """Return the changes since the last calculation, the total charge in ``info`` included."""
        changes = super().check_state(atoms, tol=tol)
        if self.atoms is not None and "charge" not in changes and total_charge(self.atoms) != total_charge(atoms):
            changes.append("charge")
        return changes

    def get_property(self, name: str, atoms: ase.Atoms | None = None, allow_calculation: bool = True):
        """Return one property, as ASE's ``Calculator.get_property`` does.

        Raises PropertyNotImplementedError with the way to train a dipole head when a model
        without one is asked for the dipole or the charges.
        """
        if name in (keys.DIPOLE, keys.CHARGES) and self.model.dipole_head is None:
            raise PropertyNotImplementedError(
                f"this model has no dipole head, so it predicts no {name}; train a model with "
                "'dipole: true' in the model section of the config and 'dipole' in the training labels, "
                "on data that carry dipoles (docs/models.md, section on dipoles)"
            )
        return super().get_property(name, atoms, allow_calculation)

    # Evaluation

    def calculate(
        self,
        atoms: ase.Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        """Evaluate energy, forces and every other available property of ``atoms`` at once."""
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        check_elements(atoms.numbers, self.elements, WHERE)

        periodic = bool(np.any(atoms.pbc))
        has_volume = periodic and abs(float(np.linalg.det(atoms.cell.array))) > MIN_CELL_VOLUME
        graph = self._graph(atoms)
        outputs = self._evaluate(graph, has_volume)

        results = {
            "energy": float(outputs[keys.ENERGY].detach()[0]),
            "energies": _to_numpy(outputs[keys.ATOMIC_ENERGIES]),
            "forces": _to_numpy(outputs[keys.FORCES]),
        }
        results["free_energy"] = results["energy"]
        if has_volume:
            results["stress"] = full_3x3_to_voigt_6_stress(_to_numpy(outputs[keys.STRESS][0]))
        if keys.DIPOLE in outputs:
            results["dipole"] = _to_numpy(outputs[keys.DIPOLE][0])
            results["charges"] = _to_numpy(outputs[keys.CHARGES])
        self._check_finite_results(results, atoms)
        self.results = results

        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress is defined only for a periodic structure; set atoms.pbc and a cell to get it"
            )
        if "stress" in properties and not has_volume:
            raise PropertyNotImplementedError(
                "stress needs a cell of nonzero volume; give all three lattice vectors, with a vacuum "
                "gap along the directions that are not periodic"
            )

    def _evaluate(self, graph: AtomicGraph, stress: bool) -> dict[str, torch.Tensor]:
        if not self._compile_pending:
            return self.model(graph, compute_forces=True, compute_stress=stress)
        try:
            outputs = self.model(graph, compute_forces=True, compute_stress=stress)
        except MLPotError:
            raise
        except Exception as error:  # torch.compile raises many unrelated types when a backend fails.
            warnings.warn(
                f"torch.compile of the energy network failed ({type(error).__name__}: {error}); "
                "using the uncompiled network",
                UserWarning,
                stacklevel=3,
            )
            self.model.energy_model = self.model.energy_model._orig_mod
            outputs = self.model(graph, compute_forces=True, compute_stress=stress)
        self._compile_pending = False
        return outputs

    def _check_finite_results(self, results: dict[str, np.ndarray | float], atoms: ase.Atoms) -> None:
        """Raise DataError when a predicted property is NaN or infinite."""
        # free_energy repeats energy, so it is left out of the message.
        bad = [name for name, value in results.items() if name != "free_energy" and not np.all(np.isfinite(value))]
        if not bad:
            return
        extent = float(np.abs(atoms.positions).max(initial=0.0))
        raise DataError(
            f"{WHERE}: the model returned NaN or infinite {', '.join(bad)}. Check that the structure is like the "
            f"training data (elements, bonding, density). Coordinates far from the origin (the largest here is "
            f"{extent:.3g} Å) lose precision, above all in float32: centre the structure, or pass dtype='float64'. "
            "If a training structure also gives NaN, the model file itself is broken"
        )

    def _graph(self, atoms: ase.Atoms) -> AtomicGraph:
        """Build the one-structure graph of ``atoms``, reusing the neighbour list when allowed.

        Raises DataError for non-finite positions or cell, and for atoms closer than MIN_DISTANCE.
        """
        positions = np.array(atoms.positions, dtype=np.float64)
        pbc = np.array(atoms.pbc, dtype=bool)
        cell = np.array(atoms.cell.array, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
        _check_finite_geometry(positions, cell, atoms.numbers)

        state = self._list_state
        if state is None or self._list_outdated(state, positions, cell, pbc, atoms.numbers):
            state = self._build_list(positions, cell, pbc, atoms.numbers)

        device = self.device
        positions_tensor = torch.tensor(positions, dtype=torch.float64, device=device)
        cell_tensor = torch.tensor(cell, dtype=torch.float64, device=device)
        edge_index, cell_shifts = state["edge_index"], state["cell_shifts"]
        lengths = _edge_lengths(positions_tensor, cell_tensor, edge_index, cell_shifts)
        _check_shortest_edge(lengths, edge_index, cell_shifts, atoms.numbers)
        if self.skin > 0.0:
            # The skin list also contains pairs that are now beyond the cutoff. They would contribute
            # exactly zero, because the model's envelope is zero there, but would cost as much as
            # any other edge. With a skin of 1 Å and a cutoff of 5 Å, the water boxes of
            # scripts/benchmark_md.py list 1.55 times the edges the model needs.
            keep = lengths < self.cutoff
            edge_index, cell_shifts = edge_index[:, keep], cell_shifts[keep]
        return {
            keys.POSITIONS: positions_tensor,
            keys.ATOMIC_NUMBERS: state["numbers"],
            keys.CELL: cell_tensor.reshape(1, 3, 3),
            keys.PBC: torch.tensor(pbc, device=device).reshape(1, 3),
            keys.BATCH: state["batch"],
            keys.NUM_ATOMS: state["num_atoms"],
            keys.EDGE_INDEX: edge_index,
            keys.CELL_SHIFTS: cell_shifts,
            keys.TOTAL_CHARGE: torch.tensor([total_charge(atoms)], dtype=torch.float64, device=device),
        }

    def _list_outdated(self, state: dict, positions, cell, pbc, numbers) -> bool:
        if self.skin == 0.0:
            return True
        if positions.shape != state["positions"].shape or not np.array_equal(numbers, state["numbers_array"]):
            return True
        if not (np.array_equal(cell, state["cell"]) and np.array_equal(pbc, state["pbc"])):
            return True
        squared = np.sum((positions - state["positions"]) ** 2, axis=1)
        return bool(squared.max(initial=0.0) >= (0.5 * self.skin) ** 2)

    def _build_list(self, positions, cell, pbc, numbers) -> dict:
        edge_index, cell_shifts = neighbour_list(positions, cell, pbc, self.cutoff + self.skin)
        device = self.device
        self.neighbour_list_builds += 1
        self._list_state = {
            "positions": positions.copy(),
            "cell": cell.copy(),
            "pbc": pbc.copy(),
            "numbers_array": np.array(numbers, copy=True),
            "numbers": torch.tensor(numbers, dtype=torch.int64, device=device),
            "batch": torch.zeros(len(numbers), dtype=torch.int64, device=device),
            "num_atoms": torch.tensor([len(numbers)], dtype=torch.int64, device=device),
            "edge_index": torch.from_numpy(edge_index).to(device),
            "cell_shifts": torch.from_numpy(cell_shifts).to(device=device, dtype=torch.float64),
        }
        return self._list_state


def total_charge(atoms: ase.Atoms) -> float:
    """Return the total charge of ``atoms`` in e: ``info["charge"]``, else the summed initial charges."""
    if "charge" in atoms.info:
        value = atoms.info["charge"]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"atoms.info['charge'] must be a number of elementary charges, got {value!r}") from None
    return float(np.sum(atoms.get_initial_charges()))


def _check_finite_geometry(positions: np.ndarray, cell: np.ndarray, numbers: np.ndarray) -> None:
    """Raise DataError naming the first atom with a NaN or infinite position, or a non-finite cell."""
    finite = np.isfinite(positions).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{WHERE}: position of atom {bad} ({symbol(int(numbers[bad]))}) is NaN or infinite")
    if not np.all(np.isfinite(cell)):
        raise DataError(f"{WHERE}: the cell contains NaN or infinite values: {cell.tolist()}")


def _edge_lengths(
    positions: torch.Tensor, cell: torch.Tensor, edge_index: torch.Tensor, cell_shifts: torch.Tensor
) -> torch.Tensor:
    """Return the (n_edges,) lengths in Å of the edges at the current positions, in float64."""
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + cell_shifts @ cell
    return torch.linalg.vector_norm(vectors, dim=-1)


def _check_shortest_edge(
    lengths: torch.Tensor, edge_index: torch.Tensor, cell_shifts: torch.Tensor, numbers: np.ndarray
) -> None:
    """Raise DataError when an edge is shorter than MIN_DISTANCE, naming both atoms and the image.

    The neighbour list contains every pair within the cutoff, so its shortest edge is the shortest
    distance in the structure whenever that distance is below the cutoff.
    """
    if lengths.numel() == 0:
        return
    shortest = int(torch.argmin(lengths))
    distance = float(lengths[shortest])
    if distance >= MIN_DISTANCE:
        return
    i, j = (int(index) for index in edge_index[:, shortest])
    shift = [int(value) for value in cell_shifts[shortest].tolist()]
    image = f" (through a periodic image, cell shift {shift})" if any(shift) else ""
    raise DataError(
        f"{WHERE}: atoms {i} ({symbol(int(numbers[i]))}) and {j} ({symbol(int(numbers[j]))}) are {distance:.3g} Å "
        f"apart{image}, closer than {MIN_DISTANCE} Å, where the model's energy is meaningless. Remove duplicated "
        "atoms or check the length unit and the cell; in MD, a smaller time step keeps atoms from colliding"
    )


def _potential_from(model: Potential | str | Path, device: torch.device) -> Potential:
    if isinstance(model, (str, Path)):
        from mlpot.models.io import load_model

        return load_model(model, device=device)
    if isinstance(model, Potential):
        return copy.deepcopy(model)
    raise TypeError(f"model must be a model file path or an mlpot Potential, got {type(model).__name__}")


def _resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype) -> torch.dtype:
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()
