"""Weighted behaviour cloning through ``BCModule.training_step``: loss and gradient are those of Σ wᵢ ℓᵢ / Σ wᵢ.

One process: non-uniform and zero weights against a hand computation from ``per_sample_loss`` under the step's
random stream. Two processes (gloo on CPU, torch's DistributedDataParallel): the gradient averaged over the
ranks equals the single-process gradient of Σ wᵢ ℓᵢ / Σ wᵢ over the whole global batch.
"""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch

from data.manifest import load_manifest
from tests.fixtures.bc import first_batch, select
from tests.fixtures.shards import write_tiny_shards

SEED = 5
STEP = 3
BATCH = 8
# non-uniform, with zeros; the first half (rank 0 in the DDP test) sums to 3.5, the second half to 7.25
WEIGHTS = [0.0, 0.5, 2.0, 1.0, 3.0, 0.0, 0.25, 4.0]
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    # state-only samples: the tiny ACT runs without a vision backbone, fast on CPU
    return write_tiny_shards(tmp_path_factory.mktemp("weighted_shards"), episodes=4, length=16, obs_steps=2,
                             horizon=8, images=False)


def _policy_cfg(**fields) -> dict:
    from omegaconf import OmegaConf

    from configs import load_config

    tiny = OmegaConf.to_container(load_config("train", ["policy=act", "debug=tiny_act"]).policy, resolve=True)
    return {**tiny, "pretrained_backbone_weights": None, **fields}


def _module(manifest: dict, policy_cfg: dict, init_seed: int = 0):
    from policies.module import BCModule

    torch.manual_seed(init_seed)  # the same initial parameters in every process that builds it
    return BCModule(policy=policy_cfg, features=manifest["features"], stats=manifest["stats"],
                    weighting={"name": "none"}, seed=SEED)


def _attach(module, weights: torch.Tensor, world: int = 1, rank: int = 0, step: int = STEP,
            strategy=None) -> dict:
    """Attach a minimal trainer, force ``weights`` and record what ``self.log`` receives."""
    logged: dict = {}
    module.trainer = SimpleNamespace(world_size=world, global_rank=rank, global_step=step, strategy=strategy)
    module.weights = lambda batch: weights
    module.log = lambda name, value, **_: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    return logged


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The random stream ``training_step`` draws from (restated here, so a change of it shows)."""
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


def _grads(module) -> list[torch.Tensor]:
    params = module.policy.parameters()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def _hand(module, batch: dict, weights: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Σ wᵢ ℓᵢ / Σ wᵢ from the per-sample losses under ``seed``, and its gradient."""
    module.policy.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    per = module.per_sample_loss(batch)
    loss = (weights * per).sum() / weights.sum()
    loss.backward()
    return loss.detach(), _grads(module)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def _assert_grads_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=RTOL, atol=ATOL)


def test_training_step_is_the_weighted_mean_in_value_and_gradient(shards):
    m = load_manifest(shards)
    module = _module(m, _policy_cfg())  # the tiny ACT as trained: VAE sampling and dropout on
    batch = first_batch(shards, module.adapter.needs(), batch_size=BATCH)
    w = torch.tensor(WEIGHTS)
    logged = _attach(module, w)
    module.policy.train()
    module.policy.zero_grad(set_to_none=True)
    loss = module.training_step(batch, 0)
    loss.backward()
    g_step = _grads(module)

    hand, g_hand = _hand(module, batch, w, _step_seed(SEED, STEP, 0))
    torch.testing.assert_close(loss.detach(), hand, rtol=RTOL, atol=ATOL)
    _assert_grads_close(g_step, g_hand)
    assert max(g.abs().max().item() for g in g_hand) > 1e-3  # the gradient compared is not all zeros
    # what the step logs: the weighted loss and the weights' summary, computed here from WEIGHTS
    assert logged["train/loss"] == pytest.approx(hand.item(), rel=1e-5)
    assert logged["train/weight_mean"] == pytest.approx(sum(WEIGHTS) / BATCH)
    assert logged["train/weight_zero_frac"] == pytest.approx(2 / BATCH)
    assert logged["train/ess"] == pytest.approx(sum(WEIGHTS) ** 2 / sum(x * x for x in WEIGHTS))
    assert module.last_loss == pytest.approx(hand.item(), rel=1e-5)

    # negative controls: uniform weights, or another random stream (another step, another rank), give other
    # values, so the equalities above say something about the weights and the seeding
    uniform, g_uniform = _hand(module, batch, torch.ones(BATCH), _step_seed(SEED, STEP, 0))
    assert abs(uniform.item() - hand.item()) > 1e-3, (uniform, hand)
    assert _max_diff(g_uniform, g_hand) > 1e-3
    for step, rank in [(STEP + 1, 0), (STEP, 1)]:
        other, _ = _hand(module, batch, w, _step_seed(SEED, step, rank))
        assert abs(other.item() - hand.item()) > 1e-4, (step, rank, other, hand)


def test_zero_weighted_samples_do_not_count(shards):
    """Samples of weight 0 change neither the loss nor the gradient, whatever their content."""
    m = load_manifest(shards)
    module = _module(m, _policy_cfg())
    batch = first_batch(shards, module.adapter.needs(), batch_size=BATCH)
    w = torch.tensor(WEIGHTS)
    zero = w == 0
    assert zero.sum() == 2 and not zero.all()
    spoiled = dict(batch)
    spoiled["action"] = torch.where(zero[:, None, None], batch["action"] * 50.0 + 7.0, batch["action"])
    module.policy.train()
    results = []
    for b in (batch, spoiled):
        _attach(module, w)
        module.policy.zero_grad(set_to_none=True)
        loss = module.training_step(b, 0)
        loss.backward()
        results.append((loss.detach(), _grads(module)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=RTOL, atol=ATOL)
    _assert_grads_close(results[0][1], results[1][1])
    # negative control: with uniform weights the spoiled samples do change the loss
    losses = []
    for b in (batch, spoiled):
        _attach(module, torch.ones(BATCH))
        losses.append(module.training_step(b, 0).item())
    assert losses[1] > losses[0] + 1.0, losses


def test_all_zero_weights_give_zero_loss_and_zero_gradient(shards):
    m = load_manifest(shards)
    module = _module(m, _policy_cfg())
    batch = first_batch(shards, module.adapter.needs(), batch_size=BATCH)
    logged = _attach(module, torch.zeros(BATCH))
    module.policy.train()
    module.policy.zero_grad(set_to_none=True)
    loss = module.training_step(batch, 0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = _grads(module)
    assert grads and all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    assert logged["train/weight_zero_frac"] == 1.0 and logged["train/ess"] == 0.0
    # negative control: one non-zero weight gives a non-zero loss and gradient on the same batch
    _attach(module, torch.tensor([0.0] * (BATCH - 1) + [1.0]))
    module.policy.zero_grad(set_to_none=True)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert loss.item() > 0.0 and max(g.abs().max().item() for g in _grads(module)) > 1e-3


# ------------------------------------------------------------------------------------------ two processes
class _GlooStrategy:
    """What ``training_step`` asks of Lightning's DDP strategy, on torch.distributed (gloo)."""

    def reduce(self, tensor: torch.Tensor, reduce_op: str = "sum") -> torch.Tensor:
        import torch.distributed as dist

        assert reduce_op == "sum"
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 (Lightning's)
        import torch.distributed as dist

        t = torch.tensor(int(decision))
        dist.all_reduce(t, op=dist.ReduceOp.MIN if all else dist.ReduceOp.MAX)
        return bool(t.item())


class _StepModel(torch.nn.Module):
    """Lightning's DDP wrapper in small: ``forward`` is the training step, so DDP's reducer sees the graph."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, batch: dict) -> torch.Tensor:
        return self.module.training_step(batch, 0)


def _ddp_worker(rank: int, world: int, port: int, manifest: dict, policy_cfg: dict, batches: list,
                weights: list, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        module = _module(manifest, policy_cfg)
        _attach(module, weights[rank], world=world, rank=rank, strategy=_GlooStrategy())
        module.policy.train()
        model = DistributedDataParallel(_StepModel(module), find_unused_parameters=True)
        loss = model(batches[rank])
        loss.backward()  # DDP averages the gradients over the ranks during backward
        torch.save({"loss": loss.detach(), "grads": _grads(module)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_gradient_equals_single_process_gradient_of_the_global_batch(shards, tmp_path):
    """Two ranks, each half of one global batch with non-uniform weights (Σw 3.5 and 7.25): the DDP-averaged
    gradient of ``training_step``'s loss is the gradient of Σwℓ/Σw over the whole batch in one process.

    Each rank seeds its own random stream (seed, step, rank), so VAE sampling and dropout would draw other
    numbers on rank 1 than the single process draws for the same samples; the policy here has a deterministic
    loss (use_vae=false, dropout=0), which makes every per-sample loss independent of the stream and of the
    other samples in the batch. The random paths are covered in one process above.
    """
    import torch.multiprocessing as mp

    m = load_manifest(shards)
    cfg = _policy_cfg(use_vae=False, dropout=0.0)
    single = _module(m, cfg)
    batch = first_batch(shards, single.adapter.needs(), batch_size=BATCH)
    w = torch.tensor(WEIGHTS)
    halves = [torch.arange(0, BATCH // 2), torch.arange(BATCH // 2, BATCH)]
    batches, weights = [select(batch, h) for h in halves], [w[h] for h in halves]
    assert [x.sum().item() for x in weights] == [3.5, 7.25]

    _attach(single, w)
    single.policy.train()
    single.policy.zero_grad(set_to_none=True)
    loss = single.training_step(batch, 0)
    loss.backward()
    g_single = _grads(single)
    hand, g_hand = _hand(single, batch, w, seed=0)  # the deterministic path: any seed gives the same
    torch.testing.assert_close(loss.detach(), hand, rtol=RTOL, atol=ATOL)
    _assert_grads_close(g_single, g_hand)

    mp.spawn(_ddp_worker, args=(2, _free_port(), m, cfg, batches, weights, str(tmp_path)), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    _assert_grads_close(ranks[0]["grads"], ranks[1]["grads"])  # DDP left both ranks with one gradient
    _assert_grads_close(ranks[0]["grads"], g_single)
    # each rank's loss is its share Σ_rank wℓ × world / Σ_global w: their mean is the global weighted loss
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, hand, rtol=RTOL, atol=ATOL)

    # negative control: the mean of the per-rank weighted means (no global Σw) is another loss and gradient
    per_rank = [_hand(single, b, x, seed=0) for b, x in zip(batches, weights, strict=True)]
    naive_loss = (per_rank[0][0] + per_rank[1][0]) / 2
    naive_grads = [(a + b) / 2 for a, b in zip(per_rank[0][1], per_rank[1][1], strict=True)]
    assert abs(naive_loss.item() - hand.item()) > 1e-3, (naive_loss, hand)
    assert _max_diff(naive_grads, g_single) > 100 * ATOL
