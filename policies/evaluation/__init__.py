"""Policy evaluation in the MetaWorld simulator: the policies a rollout drives, rollouts and their counting,
success statistics, videos, rollouts recorded as a LeRobot dataset (:mod:`policies.evaluation.recording`),
and the ``python -m policies.evaluate`` command (:mod:`policies.evaluation.run`)."""

from policies.evaluation.policies import (
    SCRIPTED,
    ExpertPolicy,
    FeatureMismatch,
    LeRobotPolicy,
    RandomPolicy,
    RolloutPolicy,
    make_policy,
    provided_features,
)
from policies.evaluation.recording import RolloutRecorder, recording_info
from policies.evaluation.rollouts import RolloutResult, evaluate_policy, rollout
from policies.evaluation.run import evaluate, main
from policies.evaluation.stats import summarise, wilson_interval
from policies.evaluation.video import write_video

__all__ = ["SCRIPTED", "ExpertPolicy", "FeatureMismatch", "LeRobotPolicy", "RandomPolicy", "RolloutPolicy",
           "RolloutRecorder", "RolloutResult", "evaluate", "evaluate_policy", "main", "make_policy",
           "provided_features", "recording_info", "rollout", "summarise", "wilson_interval", "write_video"]
