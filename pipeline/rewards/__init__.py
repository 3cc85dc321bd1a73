"""Reward models: per-prefix scores of an episode's video (``column``, ``topreward``, ``gvl``) and the frame schedule."""
