"""Building blocks of mlpot's models."""
