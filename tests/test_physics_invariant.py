"""Physics checks of the invariant energy model, in float32 and float64 (see physics_kit)."""

from __future__ import annotations

import torch
from physics_kit import EnergyModelChecks, randomise_parameters

from mlpot.config import ModelConfig
from mlpot.models.potential import Potential

#: H, C and O with isolated-atom energies of the size DFT gives (eV), so that the checks also
#: cover the float64 sum of large reference energies and small interaction energies.
ELEMENTS = [1, 6, 8]
REFERENCE_ENERGIES = [-13.6, -1027.0, -2038.0]


class TestInvariantPhysics(EnergyModelChecks):
    # Float32 round-off of the trimer's small forces reaches 2.3e-5 eV/Å, about 1e-3 of their RMS.
    # In float64: the envelope is C² at the cutoff, so the second derivative of the forces jumps
    # there, and the scan's outlier is 5.5e-4 of the RMS force; it shrinks with the square of the
    # 0.002 Å step, as a C² join should. A kink (a jump of the first derivative) would shrink only
    # linearly and stand out above 2e-3 once the slope jumps by about the RMS force per Å.
    jump_tolerances = {"float32": 3e-3, "float64": 2e-3}

    def make_potential(self, dtype: str) -> Potential:
        config = ModelConfig(
            model="invariant",
            cutoff=4.0,
            num_features=16,
            num_radial=6,
            radial_hidden=16,
            num_interactions=2,
            lmax=2,
            dtype=dtype,
        )
        torch.manual_seed(0)
        potential = Potential(config, ELEMENTS, REFERENCE_ENERGIES, energy_scale=0.8, avg_num_neighbours=6.0)
        randomise_parameters(potential, seed=0, gain=1.0)
        return potential
