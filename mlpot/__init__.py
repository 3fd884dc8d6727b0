"""mlpot: machine-learning interatomic potentials for molecules, with symmetry built in."""

__version__ = "0.1.0"
