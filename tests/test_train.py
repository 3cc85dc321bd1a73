"""train(cfg) end to end on tiny shards: learning, exact resume, export through lerobot's loaders, bad input."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from configs import ConfigError, load_config
from data.batches import WindowError
from data.manifest import ManifestError, load_manifest
from policies.module import BCModule
from policies.training import TrainingDiverged, build, train
from tests.fixtures.bc import tiny_cfg
from tests.fixtures.shards import ENV_STATE, STATE, write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # state-only (environment state instead of images): fast on CPU; images are covered by test_losses and the
    # slow image run below
    return write_tiny_shards(tmp_path_factory.mktemp("train_shards"), episodes=4, length=16, obs_steps=2, horizon=8,
                             images=False)


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("image_shards"), episodes=4, length=16, obs_steps=2, horizon=8)


def _fixed_loss(module, batch, seed=123):
    module.policy.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return module.per_sample_loss(batch).mean().item()


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    runs = {}
    for policy in ("act", "diffusion"):
        out = tmp_path_factory.mktemp(f"run_{policy}")
        cfg = tiny_cfg(shards, out, policy, "rabc", steps=12, steps_per_epoch=6, batch_size=16)
        module, dm, _ = build(cfg)
        batch = next(iter(dm.stream()))  # one fixed batch of 16
        before = _fixed_loss(module, batch)
        summary = train(cfg)
        after_module = BCModule.load_from_checkpoint(summary.checkpoint, map_location="cpu")
        runs[policy] = SimpleNamespace(cfg=cfg, out=out, summary=summary, batch=batch, before=before,
                                       after=_fixed_loss(after_module, batch), module=after_module)
    return runs


@pytest.mark.parametrize("policy", ["act", "diffusion"])
def test_training_reduces_loss(trained, policy):
    run = trained[policy]
    assert run.summary.steps == 12
    # the same batch, the same dropout/noise draws: only the weights changed
    assert run.after < 0.95 * run.before, (run.before, run.after)
    assert (run.out / "config.yaml").exists()
    from omegaconf import OmegaConf

    saved = OmegaConf.load(run.out / "config.yaml")  # the resolved config of this run
    assert saved.policy.name == policy and saved.weighting.name == "rabc" and saved.trainer.max_steps == 12
    assert saved.policy.pretrained_backbone_weights is None
    metrics = (run.out / "logs" / "metrics.csv").read_text()
    for col in ("train/loss", "train/weight_mean", "train/weight_zero_frac", "train/ess"):
        assert col in metrics.splitlines()[0]
    assert list((run.out / "logs" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("policy", ["act", "diffusion"])
def test_export_loads_with_lerobot(trained, policy):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_policy, make_pre_post_processors

    run = trained[policy]
    export = run.summary.export
    assert export == run.out / "export"
    manifest = load_manifest(run.cfg.data.shards)
    cfg = PreTrainedConfig.from_pretrained(export)
    assert cfg.type == policy and cfg.pretrained_backbone_weights is None  # nothing to download on load
    cfg.pretrained_path = export
    policy_a = make_policy(cfg, ds_meta=SimpleNamespace(features=manifest["features"], stats=None))
    policy_b = get_policy_class(cfg.type).from_pretrained(export)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(export))
    obs = {STATE: run.batch[STATE][0, -1], ENV_STATE: run.batch[ENV_STATE][0, -1]}
    actions = []
    for pol in (policy_a, policy_b, run.module.policy):
        pol.eval()
        pol.reset()
        torch.manual_seed(0)
        actions.append(post(pol.select_action(pre(dict(obs)))))
    a = actions[0]
    assert a.shape == (1, 2) and torch.isfinite(a).all()
    torch.testing.assert_close(actions[1], a)
    # the exported folder acts exactly like the checkpoint's policy behind the trained processors
    torch.testing.assert_close(actions[2], a)
    st = manifest["stats"]["action"]
    lo, hi = torch.tensor(st["min"]), torch.tensor(st["max"])
    if policy == "diffusion":  # min-max normalised, clipped samples: actions stay in the data's range
        assert ((a >= lo - 1e-5) & (a <= hi + 1e-5)).all()
    else:
        span = hi - lo
        assert ((a >= lo - span) & (a <= hi + span)).all()


def test_a_ddim_run_exports_what_lerobots_loader_samples_in_its_steps(shards, trained, tmp_path, monkeypatch):
    """A tiny run with the Diffusion block's scheduler (configs/experiment/rabc_train_diffusion.yaml) exports a
    DDIM policy that lerobot's loaders sample in that many U-Net passes per action chunk; the tiny DDPM run
    above (negative control) takes all its training timesteps."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    block = load_config("train", ["policy=diffusion", "experiment=rabc_train_diffusion"]).policy
    steps = int(block.num_inference_steps)
    cfg = tiny_cfg(shards, tmp_path / "ddim", "diffusion", "none", f"policy.noise_scheduler_type={block.noise_scheduler_type}",
                   f"policy.num_inference_steps={steps}", steps=4, steps_per_epoch=4, batch_size=16)
    assert steps < cfg.policy.num_train_timesteps == 20  # the tiny schedule: fewer passes are visible
    export = train(cfg).export
    from tests.fixtures.sim import count_unet_calls

    calls = count_unet_calls(monkeypatch)
    passes = {}
    for name, path in (("ddim", export), ("ddpm", trained["diffusion"].summary.export)):
        pcfg = PreTrainedConfig.from_pretrained(path)
        policy = get_policy_class(pcfg.type).from_pretrained(path).eval()
        pre, post = make_pre_post_processors(pcfg, pretrained_path=str(path))
        batch = trained["diffusion"].batch
        calls.clear()
        torch.manual_seed(0)
        a = post(policy.select_action(pre({STATE: batch[STATE][0, -1], ENV_STATE: batch[ENV_STATE][0, -1]})))
        assert a.shape == (1, 2) and torch.isfinite(a).all()
        passes[name] = (pcfg.noise_scheduler_type, type(policy.diffusion.noise_scheduler).__name__, len(calls))
    assert passes == {"ddim": ("DDIM", "DDIMScheduler", steps), "ddpm": ("DDPM", "DDPMScheduler", 20)}


def test_export_cli_from_checkpoint(trained, tmp_path):
    run = trained["act"]
    out = tmp_path / "exp"
    res = subprocess.run([sys.executable, "-m", "policies.export", str(run.summary.checkpoint), str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        assert (out / name).exists()
    # the training tasks travel from the checkpoint to the export (policies.evaluate compares env.task)
    assert json.loads((out / "topbc.json").read_text())["tasks"] == ["reach the goal"]
    from safetensors.torch import load_file

    a, b = load_file(out / "model.safetensors"), load_file(run.summary.export / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_exactly(shards, tmp_path):
    full = train(tiny_cfg(shards, tmp_path / "full", "act", "awr", steps=4, steps_per_epoch=2))
    half = train(tiny_cfg(shards, tmp_path / "half", "act", "awr", steps=2, steps_per_epoch=2, ))
    resumed = train(tiny_cfg(shards, tmp_path / "resumed", "act", "awr", f"resume={half.checkpoint}", steps=4,
                             steps_per_epoch=2))
    assert resumed.steps == full.steps == 4
    a, b = _state(full.checkpoint), _state(resumed.checkpoint)
    assert a["global_step"] == b["global_step"] == 4
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)
    # negative control: another seed gives other weights, so the equality above is not vacuous
    other = _state(train(tiny_cfg(shards, tmp_path / "other", "act", "awr", "seed=1", steps=4,
                                  steps_per_epoch=2)).checkpoint)
    assert any(not torch.equal(a["state_dict"][k], other["state_dict"][k]) for k in a["state_dict"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shards, tmp_path, monkeypatch):
    real = BCModule.per_sample_loss

    def poisoned(self, batch):
        loss = real(self, batch)
        return loss * float("nan") if self.global_step == 3 else loss

    monkeypatch.setattr(BCModule, "per_sample_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"at step 3.*last good checkpoint: .*last\.ckpt \(step 2\)"):
        train(tiny_cfg(shards, out, "act", "none", steps=6, steps_per_epoch=2))
    ck = _state(out / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert not (out / "export").exists()


def test_bad_configs(shards, tmp_path):
    with pytest.raises(ConfigError, match="valid options: .*awr.*filter.*none.*rabc.*top_awr"):
        tiny_cfg(shards, tmp_path, "act", "advantage")
    with pytest.raises(ConfigError, match="valid options: act, diffusion"):
        load_config("train", ["policy=pi0"])
    with pytest.raises(ConfigError, match="data.shards is not set"):
        train(load_config("train", [f"out={tmp_path}"]))
    with pytest.raises(ManifestError, match="does not exist"):
        train(tiny_cfg(tmp_path / "missing", tmp_path / "o", "act"))
    with pytest.raises(WindowError, match=r"action window.*policy needs 12.*window\.horizon=8"):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", "policy.chunk_size=12", "policy.n_action_steps=12"))
    with pytest.raises(WindowError, match=r"observation window.*needs 3.*window\.obs_steps=2"):
        train(tiny_cfg(shards, tmp_path / "o", "diffusion", "none", "policy.n_obs_steps=3"))
    with pytest.raises(ConfigError, match="trainer.devices=2: DDP starts its processes"):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", "trainer.devices=2"))
    with pytest.raises(ConfigError, match="trainer.devices=1, trainer.num_nodes=2: DDP starts its processes"):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", "trainer.num_nodes=2"))
    with pytest.raises(ConfigError, match="trainer.num_nodes=0 must be >= 1"):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", "trainer.num_nodes=0"))
    with pytest.raises(ConfigError, match="resume="):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", f"resume={tmp_path / 'nope.ckpt'}"))


def test_cli_reports_errors(shards, tmp_path, capsys):
    import train as cli

    assert cli.main([f"data.shards={shards}", f"out={tmp_path}", "weighting=advantage"]) == 2
    assert "unknown weighting 'advantage'" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(shards, tmp_path):
    out = tmp_path / "ddp"
    cfg = tiny_cfg(shards, out, "act", "rabc", steps=4, steps_per_epoch=2)
    args = [f"{k}={v}" for k, v in [("data.shards", shards), ("out", out), ("policy", "act"), ("weighting", "rabc"),
                                      ("trainer.max_steps", 4), ("data.steps_per_epoch", 2), ("data.batch_size", 8),
                                      ("data.num_workers", 1), ("trainer.devices", 2), ("trainer.accelerator", "cpu"),
                                      ("trainer.progress_bar", "false"), ("debug.record_samples", "true")]]
    args += [f"policy.{k}={v}" for k, v in cfg.policy.items() if k != "name" and k in
             ("chunk_size", "n_action_steps", "dim_model", "n_heads", "dim_feedforward", "n_encoder_layers",
              "n_decoder_layers", "n_vae_encoder_layers", "latent_dim")]
    res = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training finished" in res.stdout
    ranks = []
    for r in range(2):
        lines = [json.loads(x) for x in (out / "samples" / f"rank{r}.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [0, 1, 2, 3]
        ranks.append({tuple(k) for x in lines for k in x["keys"]})
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    assert (out / "export" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["act", "diffusion"])
def test_image_policy_trains_and_exports(image_shards, tmp_path, policy):
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    from tests.fixtures.shards import CAMERA

    cfg = tiny_cfg(image_shards, tmp_path / policy, policy, "top_awr", steps=20, steps_per_epoch=10, batch_size=16)
    module, dm, _ = build(cfg)
    batch = next(iter(dm.stream()))
    before = _fixed_loss(module, batch)
    summary = train(cfg)
    after = _fixed_loss(BCModule.load_from_checkpoint(summary.checkpoint, map_location="cpu"), batch)
    assert after < 0.9 * before, (before, after)
    pcfg = PreTrainedConfig.from_pretrained(summary.export)
    pol = get_policy_class(pcfg.type).from_pretrained(summary.export)
    pre, post = make_pre_post_processors(pcfg, pretrained_path=str(summary.export))
    a = post(pol.select_action(pre({STATE: batch[STATE][0, -1], CAMERA: batch[CAMERA][0, -1]})))
    assert a.shape == (1, 2) and torch.isfinite(a).all()


def test_export_resizes_larger_camera_frames(image_shards, tmp_path):
    """The saved preprocessor resizes frames to the training size first (lerobot's MetaWorld env renders 480×480)."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors
    from torchvision.transforms.functional import resize

    from tests.fixtures.shards import CAMERA

    module, dm, _ = build(tiny_cfg(image_shards, tmp_path / "run", "act", "none", steps=1))
    export = module.export(tmp_path / "export")
    pcfg = PreTrainedConfig.from_pretrained(export)
    pol = get_policy_class(pcfg.type).from_pretrained(export).eval()
    pre, post = make_pre_post_processors(pcfg, pretrained_path=str(export))
    assert any(type(s).__name__ == "ImageCropResizeProcessorStep" for s in pre.steps)
    batch = next(iter(dm.stream()))
    small = batch[CAMERA][0, -1]  # (3, h, w) at the training size
    big = torch.rand(3, small.shape[-2] * 3, small.shape[-1] * 3)
    state = batch[STATE][0, -1]

    def act(image, processor):
        pol.reset()
        return post(pol.select_action(processor({STATE: state, CAMERA: image})))

    torch.testing.assert_close(act(big, pre), act(resize(big, list(small.shape[-2:])), pre))
    assert json.loads((export / "topbc.json").read_text())["cameras"] == {CAMERA: list(small.shape[-2:])}
    torch.testing.assert_close(act(small, pre), act(small, module.preprocessor))  # a no-op at the training size
    # negative control: without the resize step the large frame gives another action
    assert not torch.allclose(act(big, module.preprocessor), act(big, pre))


@pytest.mark.parametrize("policy, mode", [("act", "MEAN_STD")])
def test_environment_state_is_normalised(shards, tmp_path, policy, mode):
    """lerobot's default mapping has no ENV entry (environment state passes through raw); ours normalises it."""
    module, dm, manifest = build(tiny_cfg(shards, tmp_path / policy, policy, "none", steps=1))
    assert module.policy.config.normalization_mapping["ENV"].value == mode
    batch = next(iter(dm.stream()))
    raw = batch[ENV_STATE][:, -1]
    out = module.preprocessor(module.adapter.policy_batch(batch))[ENV_STATE]
    out = out[:, -1] if out.ndim == 3 else out
    st = {k: torch.tensor(v) for k, v in manifest["stats"][ENV_STATE].items()}
    if mode == "MEAN_STD":
        expected = (raw - st["mean"]) / (st["std"] + 1e-8)
    else:
        expected = 2 * (raw - st["min"]) / (st["max"] - st["min"] + 1e-8) - 1
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, raw)  # negative control: it is not passed through


def test_unknown_normalization_mode_is_named(shards, tmp_path):
    from policies.adapters.base import PolicyConfigError

    with pytest.raises(PolicyConfigError, match="normalization_mapping.*valid modes"):
        build(tiny_cfg(shards, tmp_path / "bad", "act", "none", "policy.normalization_mapping.ENV=ZSCORE", steps=1))


def test_ema_decay_warms_up_as_diffusion_policys():
    from policies.callbacks import WarmupEMA

    f = WarmupEMA(0.9999)
    assert f.decay(0) == 0.0 and f.decay(100) == pytest.approx(1 - 101 ** -0.75)
    assert f.decay(10**9) == 0.9999  # capped
    avg, cur = torch.tensor([1.0]), torch.tensor([3.0])
    assert f(avg, cur, torch.tensor(3)).item() == pytest.approx(1.0 + 2.0 * 4 ** -0.75)


def test_ema_is_exported_and_resumes_exactly(shards, tmp_path):
    """trainer.ema_decay: the export holds the moving average, not the last weights; a checkpoint carries both,
    so a run resumed half-way ends with the same average and weights as one run straight through."""
    from safetensors.torch import load_file

    ema = "trainer.ema_decay=0.9"
    full = train(tiny_cfg(shards, tmp_path / "full", "act", "awr", ema, steps=4, steps_per_epoch=2))
    a = _state(full.checkpoint)
    assert "current_model_state" in a  # the trained weights beside the average
    trained = a["current_model_state"]
    averaged = a["state_dict"]
    exported = load_file(full.export / "model.safetensors")
    key = next(k for k in exported if f"policy.{k}" in averaged and not torch.equal(
        averaged[f"policy.{k}"], trained[f"policy.{k}"]))
    assert torch.equal(exported[key], averaged[f"policy.{key}"])
    half = train(tiny_cfg(shards, tmp_path / "half", "act", "awr", ema, steps=2, steps_per_epoch=2))
    resumed = train(tiny_cfg(shards, tmp_path / "resumed", "act", "awr", ema, f"resume={half.checkpoint}",
                             steps=4, steps_per_epoch=2))
    b = _state(resumed.checkpoint)
    for k in averaged:
        assert torch.equal(averaged[k], b["state_dict"][k]), k
    # negative control: without EMA the export is the last weights and no second state is kept
    plain = train(tiny_cfg(shards, tmp_path / "plain", "act", "awr", steps=4, steps_per_epoch=2))
    p = _state(plain.checkpoint)
    assert "current_model_state" not in p
    assert not torch.equal(p["state_dict"][f"policy.{key}"], averaged[f"policy.{key}"])
    with pytest.raises(ConfigError, match="trainer.ema_decay=1.5"):
        train(tiny_cfg(shards, tmp_path / "bad", "act", "awr", "trainer.ema_decay=1.5"))
