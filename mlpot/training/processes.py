"""The rank of this process in a DDP training, read from the environment alone.

This module imports nothing heavy, so that the command line can ask before torch is loaded.
"""

from __future__ import annotations

import os

#: Variables that are above 0 in every process but the one of global rank 0. Lightning's DDP
#: launcher sets ``LOCAL_RANK`` in the processes it starts on a node, and the user or the
#: cluster sets ``NODE_RANK`` on every node but the first. Under SLURM, where srun starts every
#: process, Lightning takes the global rank from ``SLURM_PROCID`` instead.
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_ddp_child() -> bool:
    """Return whether this process is a DDP process of a rank other than 0."""
    return any(int(os.environ.get(name) or "0") > 0 for name in RANK_VARIABLES)
