"""Typed config values: every key takes the type of its default, checked once for the whole composed config.

    check_types(cfg, "train")   # ConfigError: trainer.max_steps='ten' must be an integer (the default is 1000 ...)

The reference is the command's YAML composed with the same group options (``policy=``, ``weighting=``, ...) and
no other override, so a value typed on the command line, an overlay or a caller's config is judged against
what the file says. A key whose default is null takes any value; a string default takes any scalar (paths and
names such as ``trainer.precision=32``); an integer default takes integers (booleans are not integers here); a
float default takes integers too. Keys that accept more than their default's type are listed in ``ALSO``; keys
whose default is null but whose value has a type (a name, say) in ``NULLABLE``.
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from configs import CONFIG_DIR, ConfigError, load_config

# key → the other types it accepts besides its default's (Lightning takes devices=auto or a list of ids;
# annotate stores all cameras or a list)
ALSO: dict[str, tuple[type, ...]] = {"trainer.devices": (str, list),
                                     "dataset.cameras": (list,), "data.cameras": (list,)}
# null-default key → the type its value has when set (judged as a default of that type would be)
NULLABLE: dict[str, type] = {"record_name": str, "recordings": list, "policies": list, "blind_seed": int, "next": int, "names": list, "labels": str,
                              "episode_policies": str, "judge.threshold": float,
                              "plan": str,
                              "reward.tail_batch_size": int, "reward.memory_budget_gb": float}
NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
         list: "a list", dict: "a mapping"}


def reference(cfg: DictConfig, name: str) -> DictConfig:
    """``<name>.yaml`` composed with the group options ``cfg`` was composed with, and nothing else."""
    base = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    picks = []
    for group in dict(base.get("defaults", {}) or {}):
        node = cfg.get(group)
        if isinstance(node, DictConfig) and node.get("name") is not None:
            picks.append(f"{group}={node.name}")
    return load_config(name, picks)


def _accepts(default, value, key: str) -> bool:
    if default is None and key in NULLABLE:
        default = NULLABLE[key]()
    if default is None or value is None:
        return True
    if isinstance(value, ALSO.get(key, ())):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return not isinstance(value, dict | list)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def mismatches(cfg: dict, ref: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in cfg.items():
        full = f"{prefix}{key}"
        if key not in ref:
            continue
        default = ref[key]
        if isinstance(default, dict) and isinstance(value, dict):
            out += mismatches(value, default, full + ".")
        elif not _accepts(default, value, full):
            kind = (f"{NAMES[NULLABLE[full]]} or null" if default is None
                    else NAMES.get(type(default), type(default).__name__))
            out.append(f"{full}={value!r} must be {kind} (the default is {default!r})")
    return out


def check_types(cfg: DictConfig | ListConfig, name: str) -> None:
    """Raise :class:`ConfigError` naming every key whose value is not of its default's type."""
    ref = OmegaConf.to_container(reference(cfg, name), resolve=True)
    bad = mismatches(OmegaConf.to_container(cfg, resolve=True), ref)
    if bad:
        raise ConfigError(f"{'; '.join(bad)} in configs/{name}.yaml or its overrides; give a value of that type")
