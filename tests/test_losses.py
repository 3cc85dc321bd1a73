"""Per-sample losses of ACT and Diffusion against lerobot's own batch losses (identical RNG state)."""

import pytest
import torch

from data.manifest import load_manifest
from tests.fixtures.bc import first_batch, make_adapter, select
from tests.fixtures.shards import write_tiny_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("loss_shards"), episodes=4, length=16, obs_steps=2, horizon=8)


def _split(batch):
    padded = batch["action_is_pad"].any(1)
    assert padded.any() and (~padded).any(), "the fixture batch must hold padded and unpadded samples"
    return select(batch, ~padded), select(batch, padded)


def _both(adapter, policy, pre, batch, seed=0, ref_seed=0):
    pb = pre(adapter.policy_batch(batch))
    policy.train()
    torch.manual_seed(ref_seed)
    ref, _ = policy.forward(pb)
    torch.manual_seed(seed)
    per = adapter.per_sample_loss(policy, pb)
    return ref, per, pb


def test_act_per_sample_matches_lerobot(shards):
    m = load_manifest(shards)
    adapter, policy, pre, _ = make_adapter("act", m)
    full = first_batch(shards, adapter.needs())
    clean, padded = _split(full)
    ref, per, _ = _both(adapter, policy, pre, clean)
    assert per.shape == (clean["action"].shape[0],)
    torch.testing.assert_close(per.mean(), ref, rtol=1e-6, atol=1e-6)
    # with padding lerobot averages the L1 over all valid elements: the valid-count-weighted mean of the
    # per-sample L1 is that average, and the KL term is a plain mean
    ref, per, pb = _both(adapter, policy, pre, full)
    n = (~pb["action_is_pad"]).sum(1).float()
    torch.manual_seed(0)
    actions_hat, (mu, log_s2) = adapter.outputs(policy, pb)
    kld = (-0.5 * (1 + log_s2 - mu.pow(2) - log_s2.exp())).sum(-1)
    l1 = per - adapter.config.kl_weight * kld
    torch.testing.assert_close((n * l1).sum() / n.sum() + adapter.config.kl_weight * kld.mean(), ref,
                               rtol=1e-6, atol=1e-6)
    # negative control: on a padded batch the plain mean is NOT lerobot's loss
    assert abs(per.mean().item() - ref.item()) > 1e-4


def test_act_without_vae(shards):
    m = load_manifest(shards)
    adapter, policy, pre, _ = make_adapter("act", m, use_vae=False)
    clean, _ = _split(first_batch(shards, adapter.needs()))
    ref, per, _ = _both(adapter, policy, pre, clean)
    torch.testing.assert_close(per.mean(), ref, rtol=1e-6, atol=1e-6)


def test_diffusion_per_sample_matches_lerobot(shards):
    m = load_manifest(shards)
    adapter, policy, pre, _ = make_adapter("diffusion", m)
    batch = first_batch(shards, adapter.needs())
    ref, per, _ = _both(adapter, policy, pre, batch)
    assert per.shape == (batch["action"].shape[0],)
    torch.testing.assert_close(per.mean(), ref, rtol=1e-6, atol=1e-6)
    # negative control: another noise draw gives another loss
    ref2, per2, _ = _both(adapter, policy, pre, batch, seed=1)
    assert abs(per2.mean().item() - ref2.item()) > 1e-4


def test_diffusion_padding_masked(shards):
    m = load_manifest(shards)
    adapter, policy, pre, _ = make_adapter("diffusion", m, do_mask_loss_for_padding=True)
    batch = first_batch(shards, adapter.needs())
    clean, _ = _split(batch)
    ref, per, _ = _both(adapter, policy, pre, clean)
    torch.testing.assert_close(per.mean(), ref, rtol=1e-6, atol=1e-6)
    ref, per, pb = _both(adapter, policy, pre, batch)
    n = (~pb["action_is_pad"]).sum(1).float()
    torch.testing.assert_close((n * per).sum() / n.sum(), ref, rtol=1e-6, atol=1e-6)
    assert abs(per.mean().item() - ref.item()) > 1e-5


def test_weighting_none_is_plain_bc_in_value_and_gradient(shards):
    """The trainer's loss with weighting=none is lerobot's forward loss: same value, same gradients."""
    from omegaconf import OmegaConf

    from configs import load_config
    from data.manifest import load_manifest as _lm
    from policies.module import BCModule
    from policies.weighting import weighted_loss

    m = _lm(shards)
    tiny = OmegaConf.to_container(load_config("train", ["debug=tiny_act"]).policy, resolve=True)
    policy_cfg = {**tiny, "pretrained_backbone_weights": None}
    module = BCModule(policy=policy_cfg, features=m["features"], stats=m["stats"], weighting={"name": "none"})
    clean, _ = _split(first_batch(shards, module.adapter.needs()))
    module.policy.train()

    torch.manual_seed(0)
    ours = weighted_loss(module.per_sample_loss(clean), module.weights(clean))
    ours.backward()
    g_ours = [p.grad.clone() for p in module.policy.parameters() if p.grad is not None]
    module.policy.zero_grad()
    torch.manual_seed(0)
    ref, _ = module.policy.forward(module.preprocessor(module.adapter.policy_batch(clean)))
    ref.backward()
    g_ref = [p.grad.clone() for p in module.policy.parameters() if p.grad is not None]
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert len(g_ours) == len(g_ref) > 0
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
