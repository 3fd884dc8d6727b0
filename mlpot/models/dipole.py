"""Dipole heads: atomic charges and atomic dipoles from the node features of the energy network.

:class:`EquivariantDipoleHead` is E(3)-equivariant. It carries scalar (0e), polar-vector (1o) and
axial-vector (1e) features per atom. Each layer couples neighbour features to the spherical
harmonics of the edge directions by tensor products, weighted by learned radial filters. A linear
readout gives a charge q_i (0e) and an atomic dipole μ_i (1o) per atom.

:class:`mlpot.models.potential.Potential` shifts the charges of each structure equally so that they
sum to its total charge Q, and forms

    μ = Σ_i q_i (r_i - r_ref) + Σ_i μ_i,

with r_ref the origin of the coordinates (r_ref = 0). The choice of r_ref matters only for charged
structures. Translating every atom by t adds Q·t to μ, so a neutral molecule has the same dipole
about any point, while an ion's dipole is defined only relative to the origin of its coordinates.
Because q_i is invariant and r_i and μ_i are polar vectors, μ(R r + t) = R μ(r) + Q t for every
orthogonal R, reflections included.

:class:`InvariantDipoleReadout` is a baseline without equivariance: an MLP of invariant features
that outputs three numbers per atom and treats them as a vector. Those numbers cannot rotate with
the molecule, so trained on randomly oriented copies it learns their orientation average, which is
close to zero.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from mlpot.config import ModelConfig
from mlpot.errors import ConfigError
from mlpot.nn.mlp import mlp
from mlpot.nn.radial import BesselBasis, PolynomialEnvelope
from mlpot.nn.scatter import scatter_sum

#: Irreps of the readout: the charge (0e) and the atomic dipole (1o) of each atom.
READOUT_IRREPS = o3.Irreps("1x0e + 1x1o")
_SCALAR = o3.Irrep("0e")
_POLAR_VECTOR = o3.Irrep("1o")


def hidden_irreps(num_features: int) -> o3.Irreps:
    """Return the node irreps of the equivariant head: ``num_features`` copies each of 0e, 1o and 1e."""
    return o3.Irreps(f"{num_features}x0e + {num_features}x1o + {num_features}x1e")


def reachable_irreps(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_hidden: o3.Irreps, num_layers: int) -> set:
    """Return the irreps of the hidden features that can be nonzero after ``num_layers`` layers.

    The input layer keeps the irreps of ``irreps_in`` that the hidden irreps contain, plus 0e from
    the element embedding. Each layer adds every hidden irrep in a product ir1 ⊗ ir2 of a
    reachable irrep with an edge harmonic. The residual update keeps what was reachable before.
    """
    allowed = {ir for _, ir in irreps_hidden}
    reachable = {ir for _, ir in irreps_in if ir in allowed} | {_SCALAR}
    for _ in range(num_layers):
        products = {ir for ir1 in reachable for _, ir2 in irreps_sh for ir in ir1 * ir2}
        reachable |= products & allowed
    return reachable


class EquivariantInteraction(nn.Module):
    """One equivariant message-passing layer h_i ← h_i + Gate(Linear(A_i)).

    A_i = (1 / n_avg) Σ_j TP(Linear(h_j), Y(r̂_ij); w(r_ij)) is a channel-wise tensor product of the
    neighbour features with the edge spherical harmonics Y, weighted per edge by a linear map of the
    radial embedding. The gate passes scalars through SiLU and multiplies each vector channel by
    the sigmoid of its own scalar gate, which keeps the update equivariant.
    """

    def __init__(self, irreps_node: o3.Irreps, irreps_sh: o3.Irreps, radial_features: int, avg_num_neighbours: float):
        super().__init__()
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_node if ir == _SCALAR])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_node if ir != _SCALAR])
        self.gate = Gate(
            scalars,
            [nn.functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"),
            [torch.sigmoid],
            gated,
        )
        assert self.gate.irreps_out == irreps_node, (self.gate.irreps_out, irreps_node)

        # One 'uvu' path for each node irrep, harmonic and output irrep that the gate takes. In such
        # a path, channel u of the node feature couples to the harmonic with its own per-edge weight.
        targets = {ir for _, ir in self.gate.irreps_in}
        instructions = []
        irreps_messages = []
        for index_node, (mul, ir_node) in enumerate(irreps_node):
            for index_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_node * ir_sh:
                    if ir_out in targets:
                        instructions.append((index_node, index_sh, len(irreps_messages), "uvu", True))
                        irreps_messages.append((mul, ir_out))
        irreps_messages = o3.Irreps(irreps_messages)

        self.avg_num_neighbours = float(avg_num_neighbours)
        self.linear_in = o3.Linear(irreps_node, irreps_node)
        self.tensor_product = o3.TensorProduct(
            irreps_node, irreps_sh, irreps_messages, instructions, shared_weights=False, internal_weights=False
        )
        # Without bias the weights, and so the messages, vanish with the enveloped radial embedding.
        self.edge_weights = nn.Linear(radial_features, self.tensor_product.weight_numel, bias=False)
        self.linear_out = o3.Linear(irreps_messages, self.gate.irreps_in)

    def forward(
        self,
        features: torch.Tensor,
        centres: torch.Tensor,
        neighbours: torch.Tensor,
        radial: torch.Tensor,
        harmonics: torch.Tensor,
    ) -> torch.Tensor:
        """Update (n_atoms, dim irreps_node) features.

        Args:
            features: (n_atoms, dim irreps_node) node features.
            centres, neighbours: (n_edges,) centre i and neighbour j of each edge.
            radial: (n_edges, radial_features) radial embedding, zero at and beyond the cutoff.
            harmonics: (n_edges, dim irreps_sh) spherical harmonics of the edge directions.
        """
        sources = self.linear_in(features)[neighbours]
        messages = self.tensor_product(sources, harmonics, self.edge_weights(radial))
        aggregated = scatter_sum(messages, centres, features.shape[0]) / self.avg_num_neighbours
        # An atom without neighbours gets Gate(0) = 0 and keeps its features.
        return features + self.gate(self.linear_out(aggregated))


class EquivariantDipoleHead(nn.Module):
    """Atomic charges (0e) and atomic dipoles (1o) from node features and edge vectors.

    Args:
        irreps_in: irreps of the node features that the energy network provides, such as "64x0e".
        num_elements: number of elements; each gets its own learned scalar embedding.
        cutoff: radius in Å beyond which edges contribute nothing.
        num_features: channels of each hidden irrep (0e, 1o, 1e).
        lmax: highest degree of the edge spherical harmonics.
        num_layers: equivariant message-passing layers.
        num_radial: Bessel basis functions of the radial filters.
        radial_hidden: width of the radial MLP.
        envelope_exponent: exponent of the polynomial cutoff envelope.
        avg_num_neighbours: mean neighbour count, which normalises the neighbour sums.

    Raises:
        ConfigError: the sizes are out of range, or no 1o feature can be formed from ``irreps_in``
            and harmonics up to ``lmax`` in ``num_layers`` layers, so the head could only ever
            output zero atomic dipoles.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        num_elements: int,
        cutoff: float,
        num_features: int = 16,
        lmax: int = 2,
        num_layers: int = 2,
        num_radial: int = 8,
        radial_hidden: int = 64,
        envelope_exponent: int = 5,
        avg_num_neighbours: float = 1.0,
    ):
        super().__init__()
        irreps_in = o3.Irreps(irreps_in)
        sizes = (("dipole_features", num_features, 1), ("dipole_lmax", lmax, 0), ("dipole_layers", num_layers, 0))
        for name, value, minimum in sizes:
            if value < minimum:
                raise ConfigError(f"{name} must be at least {minimum}, got {value}")

        self.irreps_in = irreps_in
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_hidden = hidden_irreps(num_features)
        reachable = reachable_irreps(irreps_in, self.irreps_sh, self.irreps_hidden, num_layers)
        if _POLAR_VECTOR not in reachable:
            raise ConfigError(
                f"the dipole head cannot form an atomic dipole (1o) from input features {irreps_in} and edge "
                f"harmonics up to dipole_lmax={lmax} in dipole_layers={num_layers} layers; set dipole_lmax to "
                "1 or more and dipole_layers to 1 or more, or give the head node features with a 1o part"
            )

        self.embedding = nn.Embedding(num_elements, num_features)
        self.linear_in = o3.Linear(irreps_in + o3.Irreps(f"{num_features}x0e"), self.irreps_hidden)
        self.harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.basis = BesselBasis(cutoff, num_radial)
        self.envelope = PolynomialEnvelope(cutoff, envelope_exponent)
        self.radial = mlp([num_radial, radial_hidden, radial_hidden], final_activation=True)
        self.layers = nn.ModuleList(
            EquivariantInteraction(self.irreps_hidden, self.irreps_sh, radial_hidden, avg_num_neighbours)
            for _ in range(num_layers)
        )
        self.readout = o3.Linear(self.irreps_hidden, READOUT_IRREPS)

        # Row k of ``basis`` is the l = 1 harmonic of the unit vector along axis k, so a 1o feature f
        # is the Cartesian vector f @ basis.T. e3nn 0.6 orders l = 1 as x, y, z (basis = identity),
        # and this change of basis keeps the output Cartesian for any other order.
        basis = o3.spherical_harmonics(1, torch.eye(3), normalize=True, normalization="norm")
        self.register_buffer("l1_to_cartesian", basis.T.contiguous(), persistent=False)

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute (n_atoms,) charges in e and (n_atoms, 3) atomic dipoles in e·Å.

        Args:
            species: (n_atoms,) index of each atom's element.
            edge_index: (2, n_edges) centre and neighbour of each edge (see mlpot.keys).
            edge_vectors: (n_edges, 3) r_j - r_i in Å.
            features: (n_atoms, dim irreps_in) node features of the energy network.
        """
        if features.shape != (species.shape[0], self.irreps_in.dim):
            raise ValueError(
                f"node features have shape {tuple(features.shape)}; expected "
                f"({species.shape[0]}, {self.irreps_in.dim}) for irreps {self.irreps_in}"
            )
        centres, neighbours = edge_index[0], edge_index[1]
        lengths = torch.linalg.vector_norm(edge_vectors, dim=-1)
        radial = self.radial(self.basis(lengths)) * self.envelope(lengths).unsqueeze(-1)
        harmonics = self.harmonics(edge_vectors)

        hidden = self.linear_in(torch.cat([features, self.embedding(species)], dim=-1))
        for layer in self.layers:
            hidden = layer(hidden, centres, neighbours, radial, harmonics)
        output = self.readout(hidden) * OUTPUT_SCALE
        charges = output[:, 0]
        atomic_dipoles = output[:, 1:4] @ self.l1_to_cartesian
        return charges, atomic_dipoles


#: Factor on the readout, so that an untrained head predicts charges of about 0.1 e and atomic
#: dipoles of about 0.1 e·Å, the size of those in organic molecules, instead of about 1.
OUTPUT_SCALE = 0.1


class InvariantDipoleReadout(nn.Module):
    """Baseline that regresses three dipole components per atom from invariant features.

    The outputs are functions of rotation-invariant inputs, so they stay the same when the
    molecule rotates and cannot follow its orientation. The charges are zero: with q_i r_i the
    positions would carry the rotation into μ and hide the failure that this baseline shows.

    Args:
        irreps_in: irreps of the node features; every irrep must be a scalar (l = 0).
        num_elements: number of elements; each gets a learned embedding.
        hidden: width of the embedding and of the MLP's hidden layer.
    """

    def __init__(self, irreps_in: o3.Irreps, num_elements: int, hidden: int = 16):
        super().__init__()
        irreps_in = o3.Irreps(irreps_in)
        if irreps_in.lmax > 0:
            raise ConfigError(f"the invariant dipole readout takes scalar features only, got {irreps_in}")
        self.irreps_in = irreps_in
        self.embedding = nn.Embedding(num_elements, hidden)
        self.mlp = mlp([irreps_in.dim + hidden, hidden, 3])

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute (n_atoms,) zero charges and (n_atoms, 3) invariant "dipoles" in e·Å.

        Takes the same arguments as :meth:`EquivariantDipoleHead.forward`; edges are unused.
        """
        if features.shape != (species.shape[0], self.irreps_in.dim):
            raise ValueError(
                f"node features have shape {tuple(features.shape)}; expected ({species.shape[0]}, {self.irreps_in.dim})"
            )
        vectors = self.mlp(torch.cat([features, self.embedding(species)], dim=-1))
        return vectors.new_zeros(vectors.shape[0]), vectors


def build_dipole_head(
    config: ModelConfig, irreps_in: o3.Irreps, num_elements: int, avg_num_neighbours: float
) -> EquivariantDipoleHead:
    """Build the equivariant dipole head from the ``dipole_*`` and radial options of ``config``."""
    return EquivariantDipoleHead(
        irreps_in=irreps_in,
        num_elements=num_elements,
        cutoff=config.cutoff,
        num_features=config.dipole_features,
        lmax=config.dipole_lmax,
        num_layers=config.dipole_layers,
        num_radial=config.num_radial,
        radial_hidden=config.radial_hidden,
        envelope_exponent=config.envelope_exponent,
        avg_num_neighbours=avg_num_neighbours,
    )


def build_invariant_dipole_readout(
    config: ModelConfig, irreps_in: o3.Irreps, num_elements: int
) -> InvariantDipoleReadout:
    """Build the invariant baseline with the width of the equivariant head's radial MLP."""
    return InvariantDipoleReadout(irreps_in, num_elements, hidden=config.radial_hidden)
