"""The invariant energy network: message passing on interatomic distances and angles.

Each interaction block gathers, for every atom i, the neighbour features x_j weighted by learned
radial filters W(r_ij), projected on the spherical harmonics of the edge directions up to degree
``lmax``:

    A_i^{l m} = (1 / n_avg) Σ_j W^l(r_ij) x_j Y^{l m}(r̂_ij)

and updates the atom with the rotation invariants of that density,

    B_i^0 = A_i^{00},    B_i^l = sqrt(1 + Q_i^l) - 1  with  Q_i^l = Σ_m (A_i^{l m})²  for l ≥ 1.

By the addition theorem, Σ_m Y^{lm}(r̂_ij) Y^{lm}(r̂_ik) = P_l(cos θ_jik) with P_l the Legendre
polynomial, and the cosine of the angle at i is fixed by three distances,
cos θ_jik = (r_ij² + r_ik² - r_jk²) / (2 r_ij r_ik). So Q^l is a sum of three-body terms that depend on distances only, the angular power spectrum of SOAP
(Bartók, Kondor and Csányi, Phys. Rev. B 87, 184115, 2013), computed in O(edges) instead of
O(triplets). Every input the network receives is invariant under rotation, reflection and
translation, and the energy is a sum over atoms, so it is invariant under permutations.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from mlpot.nn.mlp import mlp
from mlpot.nn.radial import BesselBasis, PolynomialEnvelope
from mlpot.nn.neighbourhood import Neighbourhoods


class InteractionBlock(nn.Module):
    """One message-passing update h_i ← h_i + MLP(B_i) with the invariants B described above."""

    def __init__(self, num_features: int, radial_hidden: int, lmax: int, avg_num_neighbours: float):
        super().__init__()
        self.num_features = num_features
        self.lmax = lmax
        self.avg_num_neighbours = float(avg_num_neighbours)
        self.neighbour_linear = nn.Linear(num_features, num_features, bias=False)
        self.filter = nn.Linear(radial_hidden, (lmax + 1) * num_features, bias=False)
        for linear in (self.neighbour_linear, self.filter):
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(linear.in_features))
        # Without bias, an atom with no neighbours (B = 0) keeps its features unchanged.
        self.update = mlp([(lmax + 1) * num_features, num_features, num_features], bias=False)

    def forward(
        self,
        features: torch.Tensor,
        rows: Neighbourhoods,
        neighbours: torch.Tensor,
        radial: torch.Tensor,
        harmonics: list[torch.Tensor],
    ) -> torch.Tensor:
        """Update node features; the edge inputs other than ``radial`` come padded per centre atom.

        Args:
            features: (n_atoms, F) node features.
            rows: the layout of the edges in rows of neighbours (see Neighbourhoods).
            neighbours: (n_atoms, K) neighbour j in each slot of atom i's row (any index when unused).
            radial: (n_edges, H) radial embedding times the cutoff envelope.
            harmonics: for each degree l, (n_atoms, 2l+1, K) spherical harmonics of the edge directions.
        """
        # The filter runs on the edges and is padded afterwards: rows are as wide as the most
        # neighbours of any atom, so the padded layout has up to a third more rows for the matrix
        # product. The filter has no bias, so the unused slots stay zero.
        # split rather than slicing: the gradients concatenate instead of filling zero tensors,
        # which took a third of a training step.
        filters = rows.pad(self.filter(radial)).split(self.num_features, dim=-1)  # L+1 of (N, K, F)
        messages = self.neighbour_linear(features)[neighbours]  # (N, K, F)
        # The density A^l of each degree l, (N, 2l+1, F), kept apart: concatenating the degrees
        # and slicing them again cost a copy forward and backward.
        density = [
            torch.bmm(components, weights * messages) / self.avg_num_neighbours
            for components, weights in zip(harmonics, filters)
        ]

        invariants = [density[0][:, 0, :]]
        for block in density[1:]:
            power = block.pow(2).sum(dim=1)
            # sqrt(Q + 1) - 1 is Q/2 for small Q and grows like |A| for large Q, so stacked blocks
            # grow linearly with their input instead of squaring it at every block.
            invariants.append(torch.sqrt(power + 1.0) - 1.0)
        return features + self.update(torch.cat(invariants, dim=-1))


class InvariantEnergyModel(nn.Module):
    """Per-atom energies from element embeddings and interaction blocks on distances.

    The per-atom output is readout(h_i^T) - readout(h_i^0): zero for an atom without neighbours,
    whose features never change from their embedding h^0, so such an atom has exactly its
    reference energy.
    """

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 64,
        num_radial: int = 8,
        radial_hidden: int = 64,
        num_interactions: int = 3,
        lmax: int = 2,
        envelope_exponent: int = 5,
        avg_num_neighbours: float = 1.0,
    ):
        super().__init__()
        if lmax < 0:
            raise ValueError(f"lmax must be 0 or more, got {lmax}")
        self.lmax = lmax
        self.num_features = num_features
        self.embedding = nn.Embedding(num_elements, num_features)
        self.basis = BesselBasis(cutoff, num_radial)
        self.envelope = PolynomialEnvelope(cutoff, envelope_exponent)
        self.radial = mlp([num_radial, radial_hidden, radial_hidden], final_activation=True)
        self.interactions = nn.ModuleList(
            InteractionBlock(num_features, radial_hidden, lmax, avg_num_neighbours) for _ in range(num_interactions)
        )
        self.readout = mlp([num_features, num_features // 2, 1])
        # Built once: the function o3.spherical_harmonics builds this module on every call, which
        # took 0.16 ms of a 5 ms call on aspirin. The module has no weights or buffers.
        self.harmonics = o3.SphericalHarmonics(list(range(lmax + 1)), normalize=True, normalization="norm")
        self.irreps_out = o3.Irreps(f"{num_features}x0e")

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute (n_atoms,) dimensionless per-atom energies and (n_atoms, F) node features.

        Args:
            species: (n_atoms,) index of each atom's element in the model's element list.
            edge_index: (2, n_edges) centre and neighbour of each edge (see mlpot.keys).
            edge_vectors: (n_edges, 3) r_j - r_i in Å.
        """
        centres, neighbours = edge_index[0], edge_index[1]
        lengths = torch.linalg.vector_norm(edge_vectors, dim=-1)
        radial = self.radial(self.basis(lengths)) * self.envelope(lengths).unsqueeze(-1)
        harmonics = self.harmonics(edge_vectors)

        rows = Neighbourhoods(centres, species.shape[0])
        padded_neighbours = rows.pad(neighbours)
        degrees = [2 * l + 1 for l in range(self.lmax + 1)]
        padded_harmonics = [block.transpose(1, 2) for block in rows.pad(harmonics).split(degrees, dim=-1)]

        initial = self.embedding(species)
        features = initial
        for interaction in self.interactions:
            features = interaction(features, rows, padded_neighbours, radial, padded_harmonics)
        energies = self.readout(features) - self.readout(initial)
        return energies.squeeze(-1), features
