"""Sample weighting for reward-aligned behaviour cloning: ``loss = Σ wᵢ ℓᵢ / Σ wᵢ`` with w from a rule.

Modules, each importing only those before it: :mod:`~policies.weighting.core` (the error, the chunk gain Δ,
the per-sample keywords, the weighted loss and its summaries), :mod:`~policies.weighting.gain` (GainStats and
the rules on Δ alone), :mod:`~policies.weighting.advantage` (AdvantageStats and ``episode_quality``),
:mod:`~policies.weighting.registry` (the table of :class:`Rule` objects that fit and weigh, rejecting unknown
parameters). Formulas and sources: docs/weighting.md.
"""

from policies.weighting.advantage import AdvantageStats
from policies.weighting.core import (
    SAMPLE_FIELDS,
    WeightingError,
    chunk_gain,
    sample_info,
    weight_shares,
    weight_summary,
    weighted_loss,
)
from policies.weighting.gain import GainStats
from policies.weighting.registry import RULES, Rule, fit_weighting_stats, get_rule, weigh

__all__ = [
    "RULES",
    "SAMPLE_FIELDS",
    "AdvantageStats",
    "GainStats",
    "Rule",
    "WeightingError",
    "chunk_gain",
    "fit_weighting_stats",
    "get_rule",
    "sample_info",
    "weigh",
    "weight_shares",
    "weight_summary",
    "weighted_loss",
]
