"""The potential: an energy network with reference energies, autograd forces and stress, and dipoles.

E = Σ_i (E0[Z_i] + δ[Z_i] g_i + s ε_i), where ε_i is the energy network's dimensionless output for
atom i, E0 the per-element reference energy, s the energy scale (the RMS of the training force
components) and δ a learned per-element interaction energy, initialised from the training
split. The coordination gate g_i = 1 - exp(-Σ_j u(r_ij)), with u the cutoff envelope, is close to 1
for a bonded atom and exactly 0 for an atom without neighbours, so an isolated atom has energy
E0 and bonded atoms start from the right offset. Forces are -∂E/∂r and the stress is
(1/V) ∂E/∂ε for a symmetric strain ε applied to positions and cell, as in ASE.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mlpot import keys
from mlpot.config import ModelConfig
from mlpot.data.graph import AtomicGraph
from mlpot.data.validation import symbol
from mlpot.errors import ElementError
from mlpot.models.equivariant import EquivariantEnergyModel
from mlpot.models.invariant import InvariantEnergyModel
from mlpot.nn.dtypes import default_dtype
from mlpot.nn.radial import PolynomialEnvelope
from mlpot.nn.scatter import scatter_sum

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_energy_model(config: ModelConfig, num_elements: int, avg_num_neighbours: float) -> nn.Module:
    """Build the energy network that ``config.model`` names."""
    if config.model == "invariant":
        return InvariantEnergyModel(
            num_elements=num_elements,
            cutoff=config.cutoff,
            num_features=config.num_features,
            num_radial=config.num_radial,
            radial_hidden=config.radial_hidden,
            num_interactions=config.num_interactions,
            lmax=config.lmax,
            envelope_exponent=config.envelope_exponent,
            avg_num_neighbours=avg_num_neighbours,
        )
    if config.model == "equivariant":
        return EquivariantEnergyModel(
            num_elements=num_elements,
            cutoff=config.cutoff,
            num_features=config.equivariant_features,
            num_radial=config.num_radial,
            radial_hidden=config.radial_hidden,
            num_interactions=config.equivariant_layers,
            lmax=config.lmax,
            correlation=config.correlation,
            envelope_exponent=config.envelope_exponent,
            avg_num_neighbours=avg_num_neighbours,
        )
    raise ValueError(f"unknown model {config.model!r}")


class Potential(nn.Module):
    """Energies, forces, stress and dipoles of batched atomic graphs.

    Args:
        config: model options.
        elements: atomic numbers of the elements the model supports, in the order of its embeddings.
        reference_energies: energy of each element in ``elements``, in eV.
        energy_scale: scale s of the network's per-atom output, in eV.
        avg_num_neighbours: mean number of neighbours per atom in the training data, which
            normalises the neighbour sums.
        interaction_shifts: initial δ of each element in ``elements``, in eV; zeros when None.
    """

    def __init__(
        self,
        config: ModelConfig,
        elements: list[int],
        reference_energies: list[float],
        energy_scale: float = 1.0,
        avg_num_neighbours: float = 1.0,
        interaction_shifts: list[float] | None = None,
    ):
        super().__init__()
        if len(elements) != len(reference_energies):
            raise ValueError(f"{len(elements)} elements but {len(reference_energies)} reference energies")
        if len(set(elements)) != len(elements):
            raise ValueError(f"elements repeat: {elements}")
        self.config = config
        self.elements = [int(z) for z in elements]
        self.cutoff = float(config.cutoff)
        # Built in float64 and cast to the model dtype below, so that e3nn's coefficients are exact.
        with default_dtype(torch.float64):
            self.energy_model = build_energy_model(config, len(elements), avg_num_neighbours)
            self.dipole_head: nn.Module | None = None
            if config.dipole:
                from mlpot.models.dipole import build_dipole_head

                self.dipole_head = build_dipole_head(config, self.energy_model.irreps_out, len(elements), avg_num_neighbours)

        species_of_number = torch.full((119,), -1, dtype=torch.int64)
        species_of_number[torch.tensor(self.elements)] = torch.arange(len(elements))
        self.register_buffer("species_of_number", species_of_number, persistent=False)
        # Kept in float64 whatever the model's dtype: total energies of thousands of eV would lose
        # meV in float32. They are constructor arguments, so they are not in the state dict.
        self.reference_energies = [float(e) for e in reference_energies]
        self.energy_scale = float(energy_scale)
        self.avg_num_neighbours = float(avg_num_neighbours)
        shifts = [0.0] * len(elements) if not interaction_shifts else [float(value) for value in interaction_shifts]
        if len(shifts) != len(elements):
            raise ValueError(f"{len(elements)} elements but {len(shifts)} interaction shifts")
        self.interaction_shifts = nn.Parameter(torch.tensor(shifts))
        self.gate_envelope = PolynomialEnvelope(config.cutoff, config.envelope_exponent)
        self._reference_tensors: dict[torch.device, torch.Tensor] = {}
        self.to(DTYPES[config.dtype])

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the weights."""
        return next(self.parameters()).dtype

    def _reference_tensor(self, device: torch.device) -> torch.Tensor:
        if device not in self._reference_tensors:
            self._reference_tensors[device] = torch.tensor(self.reference_energies, dtype=torch.float64, device=device)
        return self._reference_tensors[device]

    def species(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers to element indices; raise ElementError for an element the model lacks."""
        if atomic_numbers.numel() == 0:
            return atomic_numbers
        out_of_range = (atomic_numbers < 1) | (atomic_numbers > 118)
        species = self.species_of_number[atomic_numbers.clamp(0, 118)]
        unknown = out_of_range | (species < 0)
        if bool(unknown.any()):
            numbers = sorted(set(atomic_numbers[unknown].tolist()))
            known = ", ".join(symbol(z) for z in self.elements)
            names = ", ".join(symbol(z) for z in numbers)
            raise ElementError(f"element {names} is not in the model's element list ({known})")
        return species

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Predict the properties of a batch.

        Args:
            graph: a batch from :func:`mlpot.data.graph.collate`, on the model's device; its
                floating-point fields are cast to the model's dtype here.
            compute_forces: add forces (n_atoms, 3) in eV/Å.
            compute_stress: add stress (n_graphs, 3, 3) in eV/Å³; NaN for structures without
                periodicity or with a cell of zero volume.
            create_graph: keep the graph of the derivatives, as training on forces needs.

        Returns:
            ``energy`` (n_graphs,) eV, ``atomic_energies`` (n_atoms,) eV, and when requested or
            available ``forces``, ``stress``, ``charges`` (n_atoms,) e, ``atomic_dipoles``
            (n_atoms, 3) e·Å and ``dipole`` (n_graphs, 3) e·Å.
        """
        dtype = self.dtype
        positions = graph[keys.POSITIONS].to(dtype)
        cell = graph[keys.CELL].to(dtype)
        batch = graph[keys.BATCH]
        num_graphs = cell.shape[0]
        edge_index = graph[keys.EDGE_INDEX]
        centres, neighbours = edge_index[0], edge_index[1]
        species = self.species(graph[keys.ATOMIC_NUMBERS])

        need_gradients = compute_forces or compute_stress
        # Lightning validates under no_grad; the derivatives need autograd even there.
        with torch.enable_grad() if need_gradients else contextlib.nullcontext():
            inputs = []
            if compute_forces:
                if not positions.requires_grad:
                    positions = positions.detach().requires_grad_(True)
                inputs.append(positions)
            if compute_stress:
                # A symmetric strain applied to positions and cell; dE/dstrain is the virial.
                strain = torch.zeros((num_graphs, 3, 3), dtype=dtype, device=positions.device, requires_grad=True)
                inputs.append(strain)
                symmetric = 0.5 * (strain + strain.transpose(-1, -2))
                positions = positions + torch.einsum("ni,nij->nj", positions, symmetric[batch])
                cell = cell + torch.bmm(cell, symmetric)

            shifts = torch.einsum("ei,eij->ej", graph[keys.CELL_SHIFTS].to(dtype), cell[batch[centres]])
            edge_vectors = positions[neighbours] - positions[centres] + shifts
            outputs, features = self.energy_model(species, edge_index, edge_vectors)
            references = self._reference_tensor(outputs.device)[species]
            interaction = self.interaction_shifts[species] * self._coordination_gate(edge_vectors, centres, len(species))
            atomic_energies = references + (interaction + self.energy_scale * outputs).to(torch.float64)
            energy = scatter_sum(atomic_energies, batch, num_graphs)
            results = {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: atomic_energies}

            if need_gradients:
                gradients = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
                # An input is unused when no atom has a neighbour; its derivative is then zero.
                gradients = [torch.zeros_like(x) if g is None else g for g, x in zip(gradients, inputs)]
                if compute_forces:
                    results[keys.FORCES] = -gradients[0]
                if compute_stress:
                    volume = torch.linalg.det(graph[keys.CELL].to(dtype)).abs()
                    periodic = graph[keys.PBC].any(dim=1) & (volume > 1e-12)
                    stress = gradients[-1] / volume.clamp_min(1e-12).view(-1, 1, 1)
                    results[keys.STRESS] = torch.where(periodic.view(-1, 1, 1), stress, torch.full_like(stress, float("nan")))

            if self.dipole_head is not None:
                results.update(self._dipole(graph, species, edge_index, edge_vectors, features, positions))
        return results

    def _coordination_gate(self, edge_vectors: torch.Tensor, centres: torch.Tensor, num_atoms: int) -> torch.Tensor:
        """Return g_i = 1 - exp(-Σ_j u(r_ij)) for every atom: 0 without neighbours, near 1 when bonded."""
        envelope = self.gate_envelope(torch.linalg.vector_norm(edge_vectors, dim=-1))
        return 1.0 - torch.exp(-scatter_sum(envelope, centres, num_atoms))

    def _dipole(self, graph, species, edge_index, edge_vectors, features, positions) -> dict[str, torch.Tensor]:
        """Charges, atomic dipoles and the total dipole about the origin of the coordinates."""
        batch = graph[keys.BATCH]
        num_graphs = graph[keys.CELL].shape[0]
        charges, atomic_dipoles = self.dipole_head(species, edge_index, edge_vectors, features)
        # Shift the charges of each structure equally so that they sum to its total charge.
        num_atoms = graph[keys.NUM_ATOMS].to(charges.dtype)
        excess = graph[keys.TOTAL_CHARGE].to(charges.dtype) - scatter_sum(charges, batch, num_graphs)
        charges = charges + (excess / num_atoms)[batch]
        dipole = scatter_sum(charges.unsqueeze(-1) * positions + atomic_dipoles, batch, num_graphs)
        return {keys.CHARGES: charges, keys.ATOMIC_DIPOLES: atomic_dipoles, keys.DIPOLE: dipole}
