"""demt_exp: a Hydra experiment suite for multi-task dense prediction (DeMT, DeGMix)."""

__version__ = "0.1.0"
