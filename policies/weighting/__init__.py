"""Sample weighting for reward-aligned behaviour cloning (see :mod:`policies.weighting.core`)."""

from policies.weighting.core import *  # noqa: F401,F403
from policies.weighting.core import (  # noqa: F401
    NEEDS_STATS,
    WEIGHTINGS,
    GainStats,
    WeightingError,
    chunk_gain,
    fit_weighting_stats,
    get_weighting,
    sample_info,
    weigh,
    weight_shares,
    weight_summary,
    weighted_loss,
)
