"""Config composition: groups, overrides, unknown keys named in the error, resolved config saved."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from configs import ConfigError, load_config, save_config


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "job.yaml").write_text(
        "defaults: {model: small}\nout: outputs/x\nseed: 0\ntrainer: {max_steps: 10, devices: 1}\n"
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "small.yaml").write_text("width: 8\n")
    (tmp_path / "model" / "big.yaml").write_text("width: 64\ndepth: 4\n")
    return tmp_path


def test_defaults_groups_and_overrides(config_dir):
    cfg = load_config("job", [], config_dir)
    assert cfg.model.name == "small" and cfg.model.width == 8
    cfg = load_config("job", ["model=big", "model.depth=6", "trainer.max_steps=3", "out=/tmp/o"], config_dir)
    assert (cfg.model.name, cfg.model.width, cfg.model.depth) == ("big", 64, 6)
    assert cfg.trainer.max_steps == 3 and cfg.out == "/tmp/o"


def test_unknown_key_is_named(config_dir):
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_step'.*trainer.max_steps"):
        load_config("job", ["trainer.max_step=3"], config_dir)
    with pytest.raises(ConfigError, match="'nope'"):
        load_config("job", ["nope=1"], config_dir)


def test_unknown_group_option_lists_valid(config_dir):
    with pytest.raises(ConfigError, match="unknown model 'huge'; valid options: big, small"):
        load_config("job", ["model=huge"], config_dir)


def test_malformed_override_and_missing_file(config_dir):
    with pytest.raises(ConfigError, match="key=value"):
        load_config("job", ["max_steps"], config_dir)
    with pytest.raises(ConfigError, match="no config"):
        load_config("nothing", [], config_dir)


def test_save_config_roundtrip(config_dir, tmp_path):
    cfg = load_config("job", ["model=big"], config_dir)
    path = save_config(cfg, tmp_path / "run")
    assert OmegaConf.to_container(OmegaConf.load(path)) == OmegaConf.to_container(cfg)


def test_overlay_groups_merge_onto_the_whole_config(config_dir):
    (config_dir / "debug").mkdir()
    (config_dir / "debug" / "quick.yaml").write_text("applies_to: [job]\ntrainer: {max_steps: 2}\nmodel: {width: 4}\n")
    (config_dir / "debug" / "typo.yaml").write_text("trainer: {max_step: 2}\n")
    (config_dir / "debug" / "other.yaml").write_text("applies_to: [annotate]\nseed: 1\n")
    cfg = load_config("job", ["debug=quick"], config_dir)
    assert (cfg.trainer.max_steps, cfg.model.width, cfg.model.name, cfg.trainer.devices) == (2, 4, "small", 1)
    assert "applies_to" not in cfg
    # later overrides win over the overlay; the overlay wins over the group's file
    assert load_config("job", ["debug=quick", "trainer.max_steps=7"], config_dir).trainer.max_steps == 7
    # negative controls: an overlay's unknown key, a base it does not apply to, an unknown option
    with pytest.raises(ConfigError, match="debug/typo.yaml sets a key"):
        load_config("job", ["debug=typo"], config_dir)
    with pytest.raises(ConfigError, match=r"applies to \['annotate'\], not to job.yaml"):
        load_config("job", ["debug=other"], config_dir)
    with pytest.raises(ConfigError, match="unknown debug 'nope'"):
        load_config("job", ["debug=nope"], config_dir)


def test_shipped_debug_overlays_compose():
    for policy in ("act", "diffusion"):
        cfg = load_config("train", [f"policy={policy}", f"debug=tiny_{policy}"])
        assert cfg.policy.name == policy and cfg.data.num_workers == 0 and cfg.trainer.accelerator == "cpu"
    assert load_config("train", ["debug=tiny_act"]).policy.dim_model == 32


def test_help_lists_only_the_groups_the_command_uses(capsys):
    from configs import parse_cli

    with pytest.raises(SystemExit) as exit_:
        parse_cli("annotate", ["--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert "reward=column|gvl|topreward|vlm_errors" in usage and "experiment=rabc_annotate" in usage
    for other in ("policy=", "weighting=", "debug=", "rabc_train", "rabc_corpus"):
        assert other not in usage, f"{other} is not an option of annotate: {usage}"
    with pytest.raises(SystemExit):
        parse_cli("train", ["--help"])
    usage = capsys.readouterr().out.splitlines()[0]
    assert "policy=act|diffusion" in usage and "debug=tiny_act|tiny_diffusion" in usage and "reward=" not in usage
    with pytest.raises(SystemExit):
        parse_cli("report", ["--help"])
    assert capsys.readouterr().out.splitlines()[0] == "usage: key=value overrides of configs/report.yaml"


def test_help_shows_the_groups_given_on_the_command_line(capsys):
    from configs import parse_cli

    with pytest.raises(SystemExit):
        parse_cli("annotate", ["reward=topreward", "--help"])
    shown = OmegaConf.create("\n".join(capsys.readouterr().out.splitlines()[1:]))
    assert shown.reward.name == "topreward" and "sample_fps" in shown.reward and "column" not in shown.reward
    with pytest.raises(SystemExit):  # negative control: without it, the default group's
        parse_cli("annotate", ["--help"])
    assert OmegaConf.create("\n".join(capsys.readouterr().out.splitlines()[1:])).reward.name == "column"
