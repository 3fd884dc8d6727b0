"""The E(3)-equivariant energy network: message passing on scalar, vector and tensor node features.

Every atom carries ``F`` channels of each irreducible representation 0e, 1o, 2e, … up to ``lmax``,
with the parity (-1)^l of the spherical harmonics Y^l, so that position-derived vectors are polar
(1o) and no pseudotensor features are kept. Each interaction block

1. forms the atomic basis A_i = (1 / n_avg) Σ_j TP(W h_j, Y(r̂_ij); R(r_ij)): a channel-wise tensor
   product of the neighbour features with the edge spherical harmonics, each path weighted per edge
   and channel by a radial network R of the distance;
2. mixes the channels of A_i linearly and raises its body order with channel-wise products
   B^1 = A, B^k = B^(k-1) ⊗ A for k up to ``correlation``, whose path weights depend on the
   element of atom i. In the first block a product of k densities, each a sum over neighbours,
   is a polynomial of (k+1)-body terms, so one block with correlation ν reaches body order ν + 1,
   where blocks linear in A would need ν of them. The products act on atoms, not edges, so their
   cost grows with the number of atoms only;
3. updates h_i ← h_i + Gate(Linear(B^1, …, B^ν)), where the gate applies SiLU to scalars and
   multiplies each l ≥ 1 channel by the sigmoid of its own scalar gate.

The per-atom energy is read from the 0e channels: ε_i = MLP(s_i^T) - MLP(s_i^0), with s^0 the
element embedding and s^T the scalars after the last block. An atom without neighbours gets
A = 0, hence B = 0, Gate(0) = 0, unchanged features and exactly ε_i = 0. The radial weights are
multiplied by a polynomial envelope whose value and first two derivatives vanish at the cutoff,
so energies and forces are smooth as a neighbour crosses it. Every layer maps irreps to irreps
of the same type, so energies are invariant and the node features equivariant under rotations,
reflections and translations.
"""

from __future__ import annotations


import torch
import torch.fx
from e3nn import o3
from e3nn.nn import Gate
from torch import nn

from mlpot.errors import ConfigError
from mlpot.nn.dtypes import default_dtype
from mlpot.nn.mlp import mlp
from mlpot.nn.radial import BesselBasis, PolynomialEnvelope
from mlpot.nn.scatter import scatter_sum

_SCALAR = o3.Irrep("0e")


def node_irreps(num_features: int, lmax: int) -> o3.Irreps:
    """Return ``num_features`` channels of each irrep l = 0 … lmax with parity (-1)^l (0e, 1o, 2e, …)."""
    return o3.Irreps([(num_features, (l, (-1) ** l)) for l in range(lmax + 1)])


class EdgeConvolution(nn.Module):
    """Atomic basis A_i = (1 / n_avg) Σ_j TP(Linear(h_j), Y(r̂_ij); w(r_ij)).

    The tensor product runs in "uvu" mode: channel u of the neighbour feature couples to each
    harmonic with its own per-edge weight. Only paths whose output irrep is in ``irreps_target``
    are kept. The output has one block of channels per path, ``irreps_out``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_target: o3.Irreps,
        radial_features: int,
        avg_num_neighbours: float,
    ):
        super().__init__()
        targets = {ir for _, ir in irreps_target}
        instructions = []
        irreps_out = []
        for index_in, (mul, ir_in) in enumerate(irreps_in):
            for index_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in targets:
                        instructions.append((index_in, index_sh, len(irreps_out), "uvu", True))
                        irreps_out.append((mul, ir_out))
        self.irreps_out = o3.Irreps(irreps_out)
        self.avg_num_neighbours = float(avg_num_neighbours)
        self.linear_in = o3.Linear(irreps_in, irreps_in)
        self.tensor_product = o3.TensorProduct(
            irreps_in, irreps_sh, self.irreps_out, instructions, shared_weights=False, internal_weights=False
        )
        # Without bias the weights vanish with the enveloped radial embedding at the cutoff.
        self.edge_weights = nn.Linear(radial_features, self.tensor_product.weight_numel, bias=False)

    def forward(
        self,
        features: torch.Tensor,
        centres: torch.Tensor,
        neighbours: torch.Tensor,
        radial: torch.Tensor,
        harmonics: torch.Tensor,
    ) -> torch.Tensor:
        """Map (n_atoms, dim irreps_in) features to the (n_atoms, dim irreps_out) atomic basis."""
        sources = self.linear_in(features)[neighbours]
        messages = self.tensor_product(sources, harmonics, self.edge_weights(radial))
        return scatter_sum(messages, centres, features.shape[0]) / self.avg_num_neighbours


class SymmetricProduct(nn.Module):
    """Products B^1 = A, B^k = B^(k-1) ⊗ A (k ≤ correlation) of the atomic basis with itself.

    Each product is channel-wise ("uuu": channel u times channel u gives channel u), keeps the
    output irreps of ``irreps`` and has one weight per path and channel, looked up from the
    element of the atom. B^2 keeps one path of each unordered pair of input irreps, because
    A ⊗ A has the same value for (l1, l2) and (l2, l1) up to a sign. The output concatenates
    B^1 … B^ν along the feature axis, ``irreps_out``.
    """

    def __init__(self, irreps: o3.Irreps, num_elements: int, correlation: int):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        targets = [ir for _, ir in self.irreps]
        products = []
        embeddings = []
        irreps_out = self.irreps
        for order in range(2, correlation + 1):
            instructions = []
            for index_left, (_, ir_left) in enumerate(self.irreps):
                for index_right, (_, ir_right) in enumerate(self.irreps):
                    if order == 2 and index_right < index_left:
                        continue
                    for ir_out in ir_left * ir_right:
                        if ir_out in targets:
                            instructions.append((index_left, index_right, targets.index(ir_out), "uuu", True))
            product = o3.TensorProduct(
                self.irreps, self.irreps, self.irreps, instructions, shared_weights=False, internal_weights=False
            )
            products.append(product)
            # N(0, 1) per weight, as e3nn initialises its own tensor-product weights.
            embeddings.append(nn.Embedding(num_elements, product.weight_numel))
            irreps_out = irreps_out + self.irreps
        self.products = nn.ModuleList(products)
        self.element_weights = nn.ModuleList(embeddings)
        self.irreps_out = irreps_out

    def forward(self, basis: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Map the (n_atoms, dim irreps) basis to (n_atoms, dim irreps_out) products of order 1 … ν."""
        terms = [basis]
        for product, weights in zip(self.products, self.element_weights):
            terms.append(product(terms[-1], basis, weights(species)))
        return torch.cat(terms, dim=-1)


class EquivariantInteraction(nn.Module):
    """One block h_i ← h_i + Gate(Linear(B_i)) with the convolution and products described above.

    ``irreps_in`` must be ``irreps_hidden`` or a leading part of it, such as its scalars alone in
    the first block. Missing channels count as zero in the residual sum.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_sh: o3.Irreps,
        radial_features: int,
        num_elements: int,
        correlation: int,
        avg_num_neighbours: float,
    ):
        super().__init__()
        assert irreps_hidden[: len(irreps_in)] == irreps_in, (irreps_in, irreps_hidden)
        self.padding = irreps_hidden.dim - irreps_in.dim
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir == _SCALAR])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir != _SCALAR])
        if gated.dim > 0:
            self.gate = Gate(scalars, [nn.functional.silu], o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid], gated)
            irreps_gate_in = self.gate.irreps_in
            assert self.gate.irreps_out == irreps_hidden, (self.gate.irreps_out, irreps_hidden)
        else:
            # With lmax = 0 there is nothing to gate, and e3nn's Gate rejects an empty gated part.
            self.gate = nn.SiLU()
            irreps_gate_in = scalars

        self.convolution = EdgeConvolution(irreps_in, irreps_sh, irreps_hidden, radial_features, avg_num_neighbours)
        self.linear_basis = o3.Linear(self.convolution.irreps_out, irreps_hidden)
        self.product = SymmetricProduct(irreps_hidden, num_elements, correlation)
        self.linear_out = o3.Linear(self.product.irreps_out, irreps_gate_in)

    def forward(
        self,
        features: torch.Tensor,
        species: torch.Tensor,
        centres: torch.Tensor,
        neighbours: torch.Tensor,
        radial: torch.Tensor,
        harmonics: torch.Tensor,
    ) -> torch.Tensor:
        """Update node features.

        Args:
            features: (n_atoms, dim irreps_in) node features.
            species: (n_atoms,) element index of each atom.
            centres, neighbours: (n_edges,) centre atom i and neighbour j of each edge.
            radial: (n_edges, radial_features) radial embedding, zero at and beyond the cutoff.
            harmonics: (n_edges, dim irreps_sh) spherical harmonics of the edge directions.

        Returns:
            (n_atoms, dim irreps_hidden) updated features.
        """
        basis = self.convolution(features, centres, neighbours, radial, harmonics)
        products = self.product(self.linear_basis(basis), species)
        # o3.Linear has no biases here, so an atom without neighbours gets Gate(0) = 0.
        update = self.gate(self.linear_out(products))
        if self.padding:
            features = torch.cat([features, features.new_zeros(features.shape[0], self.padding)], dim=-1)
        return features + update


def _generated_code_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the buffers of the torch.fx modules that e3nn generates, by name relative to ``model``.

    These buffers are constants such as Clebsch-Gordan coefficients, rebuilt at construction.
    Their names are not stable, because in e3nn 0.6 a copy of a tensor product (copy.deepcopy,
    pickling) regenerates its code and can store extra constants as ``_tensor_constant0``, ….
    """
    buffers = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.fx.GraphModule):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                buffers[f"{module_name}.{buffer_name}"] = buffer
    return buffers


def _drop_generated_code_buffers(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """Remove the generated constants from a state dict, so that it does not depend on how the model was copied."""
    for name in _generated_code_buffers(module):
        state_dict.pop(prefix + name, None)


def _restore_generated_code_buffers(
    module: nn.Module, state_dict: dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """Replace any generated constants in a loaded state dict with the module's own before loading."""
    generated_modules = {name for name, child in module.named_modules() if isinstance(child, torch.fx.GraphModule)}
    for key in [key for key in state_dict if key.startswith(prefix)]:
        if key[len(prefix) :].rpartition(".")[0] in generated_modules:
            del state_dict[key]
    for name, buffer in _generated_code_buffers(module).items():
        state_dict[prefix + name] = buffer


class EquivariantEnergyModel(nn.Module):
    """Per-atom energies from E(3)-equivariant message passing, read from the scalar channels.

    Args:
        num_elements: number of elements; each gets a learned scalar embedding.
        cutoff: radius in Å beyond which edges contribute nothing.
        num_features: channels of each irrep of the node features.
        num_radial: Bessel basis functions of the radial network.
        radial_hidden: width of the radial network.
        num_interactions: interaction blocks, at least 1.
        lmax: highest degree of the node features and of the edge spherical harmonics.
        correlation: highest order ν of the products of the atomic basis; 1 leaves none.
        envelope_exponent: exponent of the polynomial cutoff envelope.
        avg_num_neighbours: mean neighbour count, which normalises the neighbour sums.

    The model is built in float64, whatever torch's default dtype, and is cast with ``.to(dtype)``
    afterwards. e3nn 0.6 stores the Clebsch-Gordan coefficients of its tensor products in the
    default dtype at construction, and coefficients rounded to float32 and cast to float64 break
    the equivariance of a float64 model at the 1e-9 level.

    Raises:
        ConfigError: a size is out of range; the message names the config key
            (equivariant_features, equivariant_layers, lmax or correlation).
    """

    def __init__(
        self,
        num_elements: int,
        cutoff: float,
        num_features: int = 32,
        num_radial: int = 8,
        radial_hidden: int = 64,
        num_interactions: int = 2,
        lmax: int = 2,
        correlation: int = 3,
        envelope_exponent: int = 5,
        avg_num_neighbours: float = 1.0,
    ):
        super().__init__()
        sizes = (
            ("equivariant_features", num_features, 1),
            ("equivariant_layers", num_interactions, 1),
            ("lmax", lmax, 0),
            ("correlation", correlation, 1),
        )
        for name, value, minimum in sizes:
            if value < minimum:
                raise ConfigError(f"{name} must be at least {minimum} for the equivariant model, got {value}")

        self.num_features = num_features
        self.lmax = lmax
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_hidden = node_irreps(num_features, lmax)
        self.irreps_out = self.irreps_hidden
        with default_dtype(torch.float64):
            self.embedding = nn.Embedding(num_elements, num_features)
            self.harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
            self.basis = BesselBasis(cutoff, num_radial)
            self.envelope = PolynomialEnvelope(cutoff, envelope_exponent)
            self.radial = mlp([num_radial, radial_hidden, radial_hidden], final_activation=True)

            blocks = []
            irreps_in = o3.Irreps(f"{num_features}x0e")
            for _ in range(num_interactions):
                blocks.append(
                    EquivariantInteraction(
                        irreps_in,
                        self.irreps_hidden,
                        self.irreps_sh,
                        radial_hidden,
                        num_elements,
                        correlation,
                        avg_num_neighbours,
                    )
                )
                irreps_in = self.irreps_hidden
            self.interactions = nn.ModuleList(blocks)
            # The last layer has no bias, which would cancel in MLP(s^T) - MLP(s^0) and never train.
            hidden = max(num_features // 2, 1)
            self.readout = nn.Sequential(nn.Linear(num_features, hidden), nn.SiLU(), nn.Linear(hidden, 1, bias=False))

        # The exponential moving average of training deep-copies the model. Without these hooks
        # its state dict would name constants that a freshly built model lacks, and model files
        # written from it would not load.
        self.register_state_dict_post_hook(_drop_generated_code_buffers)
        self.register_load_state_dict_pre_hook(_restore_generated_code_buffers)

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute (n_atoms,) dimensionless per-atom energies and (n_atoms, dim irreps_out) node features.

        Args:
            species: (n_atoms,) index of each atom's element in the model's element list.
            edge_index: (2, n_edges) centre and neighbour of each edge (see mlpot.keys).
            edge_vectors: (n_edges, 3) r_j - r_i in Å.
        """
        centres, neighbours = edge_index[0], edge_index[1]
        lengths = torch.linalg.vector_norm(edge_vectors, dim=-1)
        radial = self.radial(self.basis(lengths)) * self.envelope(lengths).unsqueeze(-1)
        harmonics = self.harmonics(edge_vectors)

        initial = self.embedding(species)
        features = initial
        for interaction in self.interactions:
            features = interaction(features, species, centres, neighbours, radial, harmonics)
        scalars = features[:, : self.num_features]
        energies = self.readout(scalars) - self.readout(initial)
        return energies.squeeze(-1), features
