"""Configuration: OmegaConf YAML files in this folder, merged with ``key=value`` overrides.

A base file (``annotate.yaml``, ``train.yaml``, ...) may name config groups in a top-level ``defaults``
mapping, e.g. ``defaults: {policy: act}``. A group is a sub-folder of this directory; ``policy=diffusion``
on the command line swaps in ``policy/diffusion.yaml`` under the key ``policy`` (its ``name`` field is set to
the option chosen). A policy's file lists only what differs from its lerobot config class's defaults; every other
field of the class is filled in with lerobot's default (:mod:`configs.policies`), so it can be read and set like
the others. Every other override must name a key that exists: unknown keys are an error naming the key and the
valid ones nearby.

Two groups are overlays rather than sub-trees: ``debug=NAME`` and ``experiment=NAME`` merge ``debug/NAME.yaml``
or ``experiment/NAME.yaml`` onto the whole composed config (after the groups, before the other overrides), so
the sizes that tests and experiments run at are named files, not numbers spread through code. An overlay may
only set keys that exist; it says which base configs it applies to in ``applies_to``.

The simulated reward's error profiles (``reward=vlm_errors reward.profile=NAME``) are files of their own,
``reward/vlm_errors_profiles/NAME.yaml`` (parameters beside their calibration targets), read by
:func:`reward_profile` when the model is built; they sit one folder down, so they are not options of the
``reward`` group. The second simulator (``reward.simulator=rank``) has its own parameter files,
``reward/vlm_errors_rank_profiles/NAME.yaml``, one per profile of the first, and the first's targets:
:func:`simulator_profile` reads either.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from configs.policies import POLICY_CONFIGS, with_defaults

CONFIG_DIR = Path(__file__).resolve().parent
CONFIG_FILENAME = "config.yaml"
OVERLAY_GROUPS = ("debug", "experiment")
PROFILE_DIR = CONFIG_DIR / "reward" / "vlm_errors_profiles"
# reward=vlm_errors reward.simulator=NAME: where each simulator's profile parameters are. The first is the
# default, left out of a run's identity (outputs made before the key existed keep their fingerprints)
SIMULATOR_PROFILE_DIRS = {"additive": PROFILE_DIR, "rank": CONFIG_DIR / "reward" / "vlm_errors_rank_profiles"}
DEFAULT_SIMULATOR = "additive"


class UserError(Exception):
    """Bad input a user can fix: the message names the value, where it came from and what to do. Every error of
    this kind, whatever stage raises it, is printed by every command as one line (:mod:`configs.commands`)."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is wrong; the message says which and what to do."""


def groups(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Config groups (sub-folders) and their options (YAML file stems)."""
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml"))
        for d in sorted(config_dir.iterdir())
        if d.is_dir() and not d.name.startswith(("_", ".")) and any(d.glob("*.yaml"))
    }


def _overlay(cfg: DictConfig, name: str, group: str, option: str, config_dir: Path) -> None:
    """Merge ``<group>/<option>.yaml`` onto ``cfg`` (struct: every key it sets must exist)."""
    options = groups(config_dir).get(group, [])
    if option not in options:
        raise ConfigError(f"unknown {group} {option!r}; valid options: {', '.join(options) or '(none)'}")
    node = OmegaConf.load(config_dir / group / f"{option}.yaml")
    applies = list(node.pop("applies_to", []) or [])
    if applies and name not in applies:
        raise ConfigError(f"{group}={option} applies to {applies}, not to {name}.yaml")
    try:
        cfg.merge_with(node)
    except (ConfigAttributeError, ConfigKeyError) as exc:
        raise ConfigError(f"{group}/{option}.yaml sets a key {name}.yaml does not have: {exc.msg}") from exc


def _split_overrides(overrides: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. out=outputs/run1)")
        key, value = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        pairs.append((key.strip(), value))
    return pairs


def _group_node(group: str, option: str, config_dir: Path) -> DictConfig:
    options = groups(config_dir).get(group, [])
    if option not in options:
        raise ConfigError(f"unknown {group} {option!r}; valid options: {', '.join(options)}")
    node = OmegaConf.load(config_dir / group / f"{option}.yaml")
    if group == "policy" and option in POLICY_CONFIGS:
        node = with_defaults(option, node)
    node.name = option
    return node


def _valid_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items_ex(resolve=False) if hasattr(cfg, "items_ex") else cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys.extend(_valid_keys(v, full + "."))
    return keys


def load_config(name: str, overrides: list[str] | None = None, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose ``<config_dir>/<name>.yaml`` with its groups and ``key=value`` overrides.

    Raises :class:`ConfigError` for a missing base file, an unknown group option or an unknown key.
    """
    base_path = config_dir / f"{name}.yaml"
    if not base_path.exists():
        raise ConfigError(f"no config {base_path}; available: {', '.join(sorted(p.stem for p in config_dir.glob('*.yaml')))}")
    cfg = OmegaConf.load(base_path)
    pairs = _split_overrides(list(overrides or []))
    defaults = dict(cfg.pop("defaults", {}) or {})
    rest, overlays = [], []
    for key, value in pairs:
        if key in defaults:
            defaults[key] = value
        elif key in OVERLAY_GROUPS:
            overlays.append((key, value))
        else:
            rest.append((key, value))
    for group, option in defaults.items():
        cfg[group] = _group_node(group, str(option), config_dir)
    OmegaConf.set_struct(cfg, True)
    for group, option in overlays:
        _overlay(cfg, name, group, option, config_dir)
    for key, value in rest:
        try:
            cfg.merge_with(OmegaConf.from_dotlist([f"{key}={value}"]))
        except (ConfigAttributeError, ConfigKeyError) as exc:
            valid = _valid_keys(cfg)
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown config key {key!r} in override {key}={value!r} (config {name}.yaml).{hint}"
            ) from exc
    return cfg


def reward_profiles(profile_dir: Path = PROFILE_DIR) -> list[str]:
    """Names of the simulated reward's error profiles (``reward/vlm_errors_profiles/*.yaml``)."""
    return sorted(p.stem for p in profile_dir.glob("*.yaml"))


def reward_profile(name: str, profile_dir: Path = PROFILE_DIR) -> dict:
    """One error profile as a plain dict (``description``, ``targets``, ``parameters``)."""
    valid = reward_profiles(profile_dir)
    if name not in valid:
        raise ConfigError(f"unknown reward profile {name!r}; valid profiles: {', '.join(valid)} "
                          f"(set reward.profile=NAME; files in {profile_dir})")
    node = OmegaConf.to_container(OmegaConf.load(profile_dir / f"{name}.yaml"), resolve=True)
    if not isinstance(node.get("parameters"), dict):
        raise ConfigError(f"{profile_dir / name}.yaml has no `parameters` mapping")
    return node


def simulator_profile(name: str, simulator: str = DEFAULT_SIMULATOR) -> dict:
    """Profile ``name`` of simulator ``simulator`` (``description``, ``targets``, ``parameters``). Every
    simulator is calibrated to the same targets, written once, in the first simulator's profile file."""
    if simulator not in SIMULATOR_PROFILE_DIRS:
        raise ConfigError(f"unknown reward.simulator {simulator!r}; valid: {', '.join(SIMULATOR_PROFILE_DIRS)} "
                          f"(set reward.simulator=NAME)")
    if simulator == DEFAULT_SIMULATOR:
        return reward_profile(name)
    own = reward_profile(name, SIMULATOR_PROFILE_DIRS[simulator])
    if "targets" in own:
        raise ConfigError(f"{SIMULATOR_PROFILE_DIRS[simulator] / name}.yaml sets `targets`: they are defined once, "
                          f"in {PROFILE_DIR / name}.yaml")
    return {**own, "targets": reward_profile(name)["targets"]}


def save_config(cfg: DictConfig, out_dir: str | Path) -> Path:
    """Write the resolved config beside an output, as ``config.yaml``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILENAME
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def command_groups(name: str, config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """The groups and overlays ``<name>.yaml`` can use, with their options: the groups its ``defaults`` name,
    and the overlays (``debug``, ``experiment``) with the options whose ``applies_to`` includes it (an option
    without ``applies_to`` applies to every config)."""
    defaults = OmegaConf.load(config_dir / f"{name}.yaml").get("defaults") or {}
    available = groups(config_dir)
    out = {g: available.get(g, []) for g in defaults}
    for group in OVERLAY_GROUPS:
        options = [o for o in available.get(group, [])
                   if name in (OmegaConf.load(config_dir / group / f"{o}.yaml").get("applies_to") or [name])]
        if options:
            out[group] = options
    return out


def parse_cli(name: str, argv: list[str], config_dir: Path = CONFIG_DIR) -> DictConfig:
    """``python -m X key=value ...``; ``--help`` prints the config the other arguments compose (so
    ``reward=topreward --help`` shows TOPReward's defaults) and the groups and overlays this command uses."""
    if any(a in ("-h", "--help") for a in argv):
        cfg = load_config(name, [a for a in argv if a not in ("-h", "--help")], config_dir)
        used = command_groups(name, config_dir)
        listed = "; ".join(f"{g}={'|'.join(o)}" for g, o in used.items())
        print(f"usage: key=value overrides of configs/{name}.yaml"
              + (f"; config groups and overlays: {listed}" if listed else ""))
        print(OmegaConf.to_yaml(cfg))
        raise SystemExit(0)
    return load_config(name, argv, config_dir)
