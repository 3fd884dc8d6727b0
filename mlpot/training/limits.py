"""Allowed ranges of the numeric config keys, checked before a training reads any data.

The config module checks types and choices only. Without these checks a value such as a batch
size of 0 or an EMA decay of 1.5 would fail later, in torch, Lightning or a model constructor,
with a traceback instead of a message that names the key.
"""

from __future__ import annotations

import math

from mlpot.config import Config, fields_by_key
from mlpot.errors import ConfigError

#: Lower bound, whether the bound itself is allowed, and upper bound (None: no bound) of each
#: key. Keys of the dipole head are checked where the head is built.
RANGES: dict[str, tuple[float, bool, float | None]] = {
    "valid_fraction": (0.0, False, 1.0),
    "batch_size": (1, True, None),
    "eval_batch_size": (1, True, None),
    "num_workers": (0, True, None),
    "cutoff": (0.0, False, None),
    "num_features": (1, True, None),
    "num_radial": (1, True, None),
    "radial_hidden": (1, True, None),
    "num_interactions": (0, True, None),
    "lmax": (0, True, None),
    "correlation": (1, True, None),
    "envelope_exponent": (1, True, None),
    "max_epochs": (1, True, None),
    "max_time": (0.0, False, None),
    "devices": (1, True, None),
    "num_nodes": (1, True, None),
    "threads": (1, True, None),
    "learning_rate": (0.0, True, None),
    "weight_decay": (0.0, True, None),
    "warmup_epochs": (0.0, True, None),
    "lr_factor": (0.0, False, 1.0),
    "lr_patience": (0, True, None),
    "min_lr": (0.0, True, None),
    "early_stopping_patience": (0, True, None),
    "gradient_clip": (0.0, True, None),
    "ema_decay": (0.0, True, 1.0),
    "energy_weight": (0.0, True, None),
    "forces_weight": (0.0, True, None),
    "stress_weight": (0.0, True, None),
    "dipole_weight": (0.0, True, None),
    "log_every_n_steps": (1, True, None),
}


def describe_range(minimum: float, inclusive: bool, maximum: float | None) -> str:
    """Return the range in words, such as ``"1 or more"`` or ``"more than 0 and less than 1"``."""
    lower = f"{minimum} or more" if inclusive else f"more than {minimum}"
    return lower if maximum is None else f"{lower} and less than {maximum}"


def check_ranges(config: Config) -> None:
    """Raise ConfigError naming the key, its value and the allowed range for a value outside it.

    Upper bounds are exclusive. Empty optional values (None) are not checked.
    """
    sections = fields_by_key()
    for name, (minimum, inclusive, maximum) in RANGES.items():
        section = sections[name][0]
        value = getattr(getattr(config, section), name)
        if value is None:
            continue
        above = value >= minimum if inclusive else value > minimum
        below = maximum is None or value < maximum
        if not (math.isfinite(value) and above and below):
            raise ConfigError(
                f"config key {section}.{name} must be {describe_range(minimum, inclusive, maximum)}, got {value!r}; "
                f"set --{name.replace('_', '-')} or {name} in the {section} section of the config file"
            )
