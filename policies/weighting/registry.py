"""The table of weighting rules: one :class:`Rule` object per ``weighting=<name>``, that fits and weighs.

    rule = get_rule("rabc")
    params = rule.check({"kappa": 0.01})          # an unknown key raises WeightingError ("did you mean ...")
    stats = rule.fit(table, episodes, **params)   # once per run, before training; None if the rule reads none
    w = rule.weigh(progress, stats, **sample_info(batch), **params)   # progress: (B, H+1) windows

A rule's parameters are the keyword-only arguments of its weight function and of its fit function, with
their defaults (read from the signatures, so the defaults live in one place: the function). ``fit`` passes
each function only the parameters it declares; so does ``weigh``, which also passes only the per-sample
keywords (:data:`policies.weighting.core.SAMPLE_FIELDS`) the weight function declares. The configs
(``configs/weighting/<name>.yaml``, ``weighting.<param>=value``) hold one set of parameters per rule, and the
module passes all of them to both.

Dataset statistics are fitted ONCE per run, before training (``policies.training.build``), on
:func:`data.progress_table.fit_progress_table` (one pass over the ``progress.npy`` windows of every shard
sample, cut to the policy's chunk — exactly the Δ the rules see in training) plus the manifest's
``episodes``: :class:`policies.weighting.gain.GainStats` for the gain rules,
:class:`policies.weighting.advantage.AdvantageStats` for ``episode_quality``. The fit inputs travel in
the checkpoints, so a resumed run weighs with the same statistics.

Rules: ``none``, ``top_awr``, ``rabc``, ``awr``, ``filter`` (:mod:`policies.weighting.gain`);
``episode_quality`` (:mod:`policies.weighting.advantage`); formulas and sources in docs/weighting.md.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from policies.weighting.advantage import AdvantageStats, episode_quality
from policies.weighting.core import SAMPLE_FIELDS, WeightingError
from policies.weighting.gain import GainStats, awr, filter_top, none, rabc, top_awr

WeighFn = Callable[..., Tensor]
FitFn = Callable[..., Any]


def _keywords(fn: Callable, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword-only parameters of ``fn`` with their defaults, less ``skip``."""
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        # a catch-all would accept any key, so the table could not tell a typo from a parameter
        raise TypeError(f"{fn!r} takes **kwargs; a weighting function must list its parameters")
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in skip}


@dataclass(frozen=True)
class Rule:
    """One weighting rule: how it weighs, what it fits, which parameters it accepts (build with :meth:`of`).

    ``weigh_params`` / ``fit_params``: parameter name → default of the weight / fit function; ``reads``: the
    per-sample keywords the weight function takes; ``fit_if``: given the full parameters (defaults filled
    in), whether the rule reads dataset statistics (None: whenever it has a ``fit_fn``).
    """

    name: str
    weigh_fn: WeighFn
    fit_fn: FitFn | None
    weigh_params: Mapping[str, Any]
    fit_params: Mapping[str, Any]
    reads: tuple[str, ...]
    fit_if: Callable[[Mapping[str, Any]], bool] | None = None

    @classmethod
    def of(cls, name: str, weigh_fn: WeighFn, fit_fn: FitFn | None = None, *, fit_skip: tuple[str, ...] = (),
           fit_if: Callable[[Mapping[str, Any]], bool] | None = None) -> Rule:
        """The rule ``name`` of ``weigh_fn`` and ``fit_fn``, its parameters read from their signatures;
        ``fit_skip``: keywords of ``fit_fn`` the rule binds itself (not user parameters)."""
        sig = inspect.signature(weigh_fn).parameters
        return cls(name=name, weigh_fn=weigh_fn, fit_fn=fit_fn,
                   weigh_params=_keywords(weigh_fn, skip=tuple(SAMPLE_FIELDS)),
                   fit_params=_keywords(fit_fn, skip=fit_skip) if fit_fn is not None else {},
                   reads=tuple(k for k in SAMPLE_FIELDS if k in sig), fit_if=fit_if)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter the rule accepts, with its default (fit-time ones first)."""
        return {**self.fit_params, **self.weigh_params}

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` as a dict once every key is one the rule accepts; else a WeightingError naming it."""
        valid = self.params
        for key in params:
            if key not in valid:
                hint = difflib.get_close_matches(str(key), list(valid), n=1)
                raise WeightingError(
                    f"weighting {self.name!r} has no parameter {key!r}; "
                    f"valid: {', '.join(valid) or '(none)'}." + (f" Did you mean {hint[0]}?" if hint else "")
                    + f" Fix the key in configs/weighting/{self.name}.yaml or the weighting.{key}= override")
        return dict(params)

    def needs_stats(self, **params) -> bool:
        """Whether the rule, with ``params``, reads dataset statistics (so the trainer fits them)."""
        params = self.check(params)
        if self.fit_fn is None:
            return False
        return True if self.fit_if is None else bool(self.fit_if({**self.params, **params}))

    def fit(self, table, episodes: list[dict], **params):
        """The dataset statistics the rule reads with ``params`` (None when it reads none), fitted on
        ``table`` (:class:`data.progress_table.ProgressTable`) and the manifest's ``episodes``."""
        if not self.needs_stats(**params):
            return None
        return self.fit_fn(table, episodes, **{k: v for k, v in params.items() if k in self.fit_params})

    def weigh(self, progress: Tensor, stats=None, *, success: Tensor | None = None,
              episode: Tensor | None = None, frame: Tensor | None = None, **params) -> Tensor:
        """One weight per sample of ``progress`` (B, H+1); ``stats``: what :meth:`fit` returned."""
        params = self.check(params)
        sample = {"success": success, "episode": episode, "frame": frame}
        return self.weigh_fn(progress, stats, **{k: sample[k] for k in self.reads},
                             **{k: v for k, v in params.items() if k in self.weigh_params})


def _centered(params: Mapping[str, Any]) -> bool:
    # top_awr: the literal rule reads no statistics; the centred one reads mean Δ
    return bool(params["centered"])


# module-level functions only (no lambdas or closures), so a Rule pickles, e.g. into ddp_spawn's processes
RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule.of("none", none),
    Rule.of("top_awr", top_awr, GainStats.fit, fit_if=_centered),
    Rule.of("rabc", rabc, GainStats.fit),
    Rule.of("awr", awr, GainStats.fit),
    Rule.of("filter", filter_top, GainStats.fit),
    Rule.of("episode_quality", episode_quality, AdvantageStats.fit),
)}


def get_rule(name: str) -> Rule:
    try:
        return RULES[name]
    except KeyError:
        hint = difflib.get_close_matches(str(name), list(RULES), n=1)
        raise WeightingError(f"unknown weighting {name!r}; valid: {', '.join(RULES)}"
                             + (f". Did you mean {hint[0]}?" if hint else "")) from None


def weigh(name: str, progress: Tensor, stats=None, **kwargs) -> Tensor:
    """One weight per sample of ``progress`` (B, H+1) under rule ``name``: ``get_rule(name).weigh(...)``."""
    return get_rule(name).weigh(progress, stats, **kwargs)


def fit_weighting_stats(name: str, table, episodes: list[dict], **params):
    """The dataset statistics rule ``name`` reads with ``params``: ``get_rule(name).fit(...)``."""
    return get_rule(name).fit(table, episodes, **params)
