"""GPU check: the figures docs/benchmarks.md has none of on CUDA, one JSON line per figure, in ≤ 8 minutes.

    benchmarks/gpu_check.sh                                   # on the GPU machine (installs .gpu_wheels first)
    python -m benchmarks.gpu_check run [--device cpu --profile tiny] [--stages scoring,memory]

Stages, each in its own process with a timeout, in this order (``STAGES``):

``scoring``   one-pass vs per-prefix (``mode="naive"``) TOPReward scoring of one clip on a random Qwen3-VL at the
              sizes of Qwen3-VL-2B (``PROFILES["2b"]["model"]``, built offline with tests/fixtures/tiny_vlm.py), in
              bfloat16 and in float32: max |Δ log p(" True")| between the modes in each dtype, times, speedup.
``annotate``  ``pipeline.annotate`` (reward=topreward on that model, bfloat16, ``accelerator=cuda``) of a generated
              LeRobot dataset: frames/s over the whole call.
``memory``    peak CUDA memory of one-pass scoring above the weights (``torch.cuda.max_memory_allocated``) with the
              automatic tail batch, all tails in one call and 16 per call, beside the scorer's memory model.
``train``     ACT and Diffusion image policies, ``train.py`` on generated shards, ``trainer.precision=bf16-mixed``,
              ``accelerator=gpu``: steps/s after a warm-up (and over the whole fit).
``eval``      a MetaWorld push-v3 image corpus → column annotation → a briefly trained image ACT → ``lerobot-eval``
              (``MUJOCO_GL=egl``), the README's command: success rate and time.

A stage whose requirement is missing (a package, the CUDA device, EGL) prints ``{"stage": ..., "skipped": why}``;
one that crashes or runs out of time prints ``{"stage": ..., "failed": why, "log": ...}``; the next stage runs
either way. ``--device cpu --profile tiny`` is the dry run (tiny model, a few frames and steps) that the tests run
end to end on a CPU. Environment (read by gpu_check.sh and by ``run``): ``GPU_CHECK_DEVICE``,
``GPU_CHECK_PROFILE``, ``GPU_CHECK_STAGES``, ``GPU_CHECK_BUDGET_S`` (all stages together), ``GPU_CHECK_WHEELS``
(the wheel folder, to say why a package is missing); for tests, ``GPU_CHECK_BLOCK=stage:module,...`` makes an
import fail in one stage and ``GPU_CHECK_TIMEOUTS=stage:seconds,...`` overrides a stage's timeout.

Module level is stdlib only: the driver must start wherever a stage's packages are missing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STAGES = ("scoring", "annotate", "memory", "train", "eval")
TASK = "push the puck to the goal"
NATIVE_FPS, SAMPLE_FPS = 4.0, 2.0

# Qwen3-VL-2B's sizes (its config.json: text hidden 2048, 28 layers, 16 heads, 8 KV heads of 128, intermediate
# 6144, vocabulary 151,936, M-RoPE sections 24/20/20, θ 5e6; vision depth 24, hidden 1024, 16 heads, intermediate
# 4096, patch 16, 2304 position embeddings, deepstack layers 5/11/17). Untied embeddings: the builder scales the
# embeddings and the LM head apart, so the random model has the LM head's 311M parameters twice.
QWEN3_VL_2B = dict(hidden=2048, layers=28, heads=16, kv_heads=8, intermediate=6144, vocab_size=151936,
                   mrope_section=(24, 20, 20), rope_theta=5e6, vision_depth=24, vision_hidden=1024, vision_heads=16,
                   vision_intermediate=4096, patch_size=16, num_position_embeddings=2304, deepstack=(5, 11, 17),
                   max_positions=32768)

PROFILES = {
    # on the GPU machine; timeouts sum past the budget on purpose: a stage gets min(its timeout, time left)
    "2b": {
        "budget_s": 450,
        "timeouts": {"scoring": 210, "annotate": 150, "memory": 90, "train": 180, "eval": 240},
        "model": QWEN3_VL_2B,
        "scoring": {"frames": 64, "resolution": 256},  # 32 s at 2 fps, 8×8 merged patches per frame group
        "annotate": {"episodes": 12, "length": 300, "fps": 30, "size": 224},
        "memory": {"frames": 240, "resolution": 256},  # 2 min at 2 fps: 120 prefixes, ≈ 8k video tokens
        "train": {"episodes": 8, "length": 100, "size": 96, "batch": 64, "steps": 200, "warmup": 50, "workers": 8,
                  "act": ["policy.pretrained_backbone_weights=null"],
                  "diffusion": ["policy.pretrained_backbone_weights=null", "policy.use_group_norm=true"]},
        "eval": {"corpus_episodes": 10, "corpus_length": 150, "size": 96, "steps": 500, "batch": 64, "workers": 8,
                 "rollouts": 5},
    },
    # the CPU dry run (tests): the same code paths at sizes that take seconds
    "tiny": {
        "budget_s": 1200,
        "timeouts": {"scoring": 180, "annotate": 180, "memory": 120, "train": 180, "eval": 480},
        "model": {},
        "scoring": {"frames": 12, "resolution": 32},
        "annotate": {"episodes": 2, "length": 16, "fps": 8, "size": 32},
        "memory": {"frames": 16, "resolution": 32},
        "train": {"episodes": 2, "length": 24, "size": 32, "batch": 4, "steps": 6, "warmup": 2, "workers": 0,
                  "act": ["debug=tiny_act"], "diffusion": ["debug=tiny_diffusion"]},
        "eval": {"corpus_episodes": 2, "corpus_length": 20, "size": 32, "steps": 4, "batch": 4, "workers": 0,
                 "rollouts": 1, "debug": "tiny_act"},
    },
}

# the imports each stage needs, checked before it starts (a missing one makes it print `skipped`)
STAGE_MODULES = {
    "scoring": ("torch", "transformers", "PIL", "torchvision"),
    "memory": ("torch", "transformers", "PIL", "torchvision"),
    "annotate": ("torch", "transformers", "PIL", "torchvision", "omegaconf", "lerobot.datasets", "av"),
    "train": ("torch", "pytorch_lightning", "PIL", "torchvision", "omegaconf", "lerobot.policies"),
    "eval": ("metaworld", "mujoco", "torch", "pytorch_lightning", "PIL", "torchvision", "omegaconf", "av",
             "lerobot.policies", "lerobot.envs"),
}
DISTRIBUTIONS = {"PIL": "pillow", "cv2": "opencv-python-headless", "pytorch_lightning": "pytorch-lightning"}


class Skip(Exception):
    """A requirement of the stage is missing; the message says which."""


def _pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(item.split(":", 1)) for item in text.split(",") if ":" in item]


# ----------------------------------------------------------------------------------------------- stage process
class _Blocked(importlib.abc.MetaPathFinder):
    """Makes the named top-level modules unimportable (GPU_CHECK_BLOCK: the tests' negative control)."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by GPU_CHECK_BLOCK)", name=name)
        return None


class Stage:
    """What a stage function gets: its settings, device, work folder, and the requirement checks."""

    def __init__(self, name: str, profile: str, device: str, work: Path):
        self.name, self.profile_name, self.device, self.work = name, profile, device, work
        self.profile = PROFILES[profile]
        self.cfg = self.profile.get(name, {})

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def need(self, *modules: str) -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a package that fails while loading (e.g. a missing .so)
                top = module.split(".")[0]
                why = f"{module} cannot be imported ({type(exc).__name__}: {exc})"
                wheels = os.environ.get("GPU_CHECK_WHEELS")
                if wheels:
                    from benchmarks.gpu_wheels import left_out, normalise

                    dist = normalise(DISTRIBUTIONS.get(top, top))
                    if dist in left_out(Path(wheels)):
                        why += "; " + left_out(Path(wheels))[dist]
                raise Skip(why) from None

    def need_device(self) -> dict:
        """The device's description; Skip when CUDA was asked for and there is none."""
        self.need("torch")
        import torch

        if not self.cuda:
            return {"device": "cpu", "torch": torch.__version__}
        if not torch.cuda.is_available():
            raise Skip("no CUDA device: torch.cuda.is_available() is False")
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                "cuda": torch.version.cuda}

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def model(self) -> tuple[Path, dict]:
        """The random Qwen3-VL of the profile, built once into the work folder (shared by the stages)."""
        import torch

        from tests.fixtures.tiny_vlm import build_tiny_qwen3vl, num_parameters

        path = self.work / "vlm"
        info_file = self.work / "vlm.json"
        if not (path / "config.json").exists() or not info_file.exists():
            tmp = self.work / "vlm.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            sizes = dict(self.profile["model"])
            build_tiny_qwen3vl(tmp, seed=0, logit_scale=4.0, save_dtype=torch.bfloat16, **sizes)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            sizes = {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}
            info = {"sizes": sizes or "tests' tiny default", "parameters": num_parameters(path),
                    "saved_dtype": "bfloat16", "build_s": round(time.perf_counter() - t0, 1)}
            info_file.write_text(json.dumps(info))
        return path, json.loads(info_file.read_text())


def stage_main(name: str, profile: str, device: str, work: Path, result: Path) -> int:
    blocked = {m for s, m in _pairs(os.environ.get("GPU_CHECK_BLOCK", "")) if s == name}
    if blocked:
        sys.meta_path.insert(0, _Blocked(blocked))
    stage = Stage(name, profile, device, work)
    try:
        info = stage.need_device()
        stage.need(*STAGE_MODULES[name])
        out = {**info, **STAGE_FUNCTIONS[name](stage)}
    except Skip as exc:
        out = {"skipped": str(exc)}
    result.write_text(json.dumps(out))
    return 0


# ----------------------------------------------------------------------------------------------- the stages
def _scores(scorer, frames, mode: str, sync) -> tuple[float, object]:
    sync()
    t0 = time.perf_counter()
    res = scorer.score(frames, NATIVE_FPS, TASK, mode=mode)
    sync()
    return time.perf_counter() - t0, res


def run_scoring(st: Stage) -> dict:
    import numpy as np
    import torch

    from pipeline.rewards.topreward import TOPRewardScorer
    from tests.fixtures.tiny_vlm import moving_square_clip

    model_dir, model = st.model()
    frames = moving_square_clip(int(st.cfg["frames"] * NATIVE_FPS / SAMPLE_FPS), st.cfg["resolution"])
    out = {"model": model, "clip": {"frames": len(frames), "native_fps": NATIVE_FPS, "sample_fps": SAMPLE_FPS}}
    one_pass = {}
    for dtype in ("bfloat16", "float32"):
        t0 = time.perf_counter()
        scorer = TOPRewardScorer.from_pretrained(model_dir, device=st.device, dtype=dtype, sample_fps=SAMPLE_FPS,
                                                 resolution=st.cfg["resolution"])
        load_s = time.perf_counter() - t0
        scorer.score(frames[:8], NATIVE_FPS, TASK)  # warm-up (kernels, allocator)
        one_s, one = _scores(scorer, frames, "one_pass", st.sync)
        naive_s, naive = _scores(scorer, frames, "naive", st.sync)
        one_pass[dtype] = one.logp_true
        out.update(prefixes=len(one.raw), sampled_frames=len(one.sampled_indices), resolution=list(one.resolution),
                   tokens_one_pass=one.tokens, tokens_naive=naive.tokens)
        out[dtype] = {
            "max_abs_diff_true": float(np.abs(one.logp_true - naive.logp_true).max()),
            "max_abs_diff_false": float(np.abs(one.logp_false - naive.logp_false).max()),
            "logp_true_range": float(np.ptp(naive.logp_true)),
            "one_pass_s": round(one_s, 4), "naive_s": round(naive_s, 4), "speedup": round(naive_s / one_s, 2),
            "tail_batch_size": scorer.last_plan.tail_batch_size if scorer.last_plan else None,
            "load_s": round(load_s, 1),
        }
        del scorer
        if st.cuda:
            torch.cuda.empty_cache()
    out["bf16_vs_float32_max_abs_diff_true"] = float(np.abs(one_pass["bfloat16"] - one_pass["float32"]).max())
    return out


def run_annotate(st: Stage) -> dict:
    from benchmarks.annotate import run_once
    from tests.fixtures.datasets import make_synthetic_dataset

    c = st.cfg
    model_dir, model = st.model()
    t0 = time.perf_counter()
    root = make_synthetic_dataset(st.work / "annotate_ds", episodes=c["episodes"], length=c["length"], fps=c["fps"],
                                  image_size=(c["size"], c["size"]), cameras=("top",), seed=0)
    dataset_s = time.perf_counter() - t0
    dtype = "bfloat16" if st.cuda else "float32"
    res = run_once(root, st.work / "annotate_out", [
        "reward=topreward", f"reward.model={model_dir}", f"reward.sample_fps={SAMPLE_FPS}", f"reward.dtype={dtype}",
        f"accelerator={st.device}", "plots=false"])
    return {"model": {"parameters": model["parameters"], "dtype": dtype},
            "dataset": {"episodes": c["episodes"], "length": c["length"], "fps": c["fps"],
                        "image_size": [c["size"], c["size"]], "seconds": round(dataset_s, 1)}, **res,
            "note": "seconds include loading the model (pipeline.annotate builds its reward model per call)"}


@contextmanager
def _peak(cuda: bool):
    """Peak memory of the block above what was allocated before it: CUDA's max_memory_allocated, or on CPU the
    resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs)."""
    out = {}
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out.update(peak_bytes=int(torch.cuda.max_memory_allocated() - before),
                   peak_reserved_bytes=int(torch.cuda.max_memory_reserved()), measure="torch.cuda.max_memory_allocated")
        return

    def status_kb(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    before = status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    yield out
    out.update(peak_bytes=(status_kb("VmHWM") - before) * 1024, measure="peak RSS delta (VmHWM)")


def run_memory(st: Stage) -> dict:
    from dataclasses import replace

    import torch

    from pipeline.rewards.topreward import TOPRewardScorer
    from tests.fixtures.tiny_vlm import moving_square_clip

    model_dir, model = st.model()
    dtype = "bfloat16" if st.cuda else "float32"
    frames = moving_square_clip(int(st.cfg["frames"] * NATIVE_FPS / SAMPLE_FPS), st.cfg["resolution"])
    scorer = TOPRewardScorer.from_pretrained(model_dir, device=st.device, dtype=dtype, sample_fps=SAMPLE_FPS,
                                             resolution=st.cfg["resolution"])
    weights = int(torch.cuda.memory_allocated()) if st.cuda else None
    scorer.score(frames[:8], NATIVE_FPS, TASK)  # warm-up
    runs = []
    for batch in (None, 0, 16):
        scorer.options = replace(scorer.options, tail_batch_size=batch)
        with _peak(st.cuda) as peak:
            t0 = time.perf_counter()
            scorer.score(frames, NATIVE_FPS, TASK)
            st.sync()
            seconds = time.perf_counter() - t0
        plan = scorer.last_plan
        runs.append({"tail_batch_size": "auto" if batch is None else batch, "tails_per_call": plan.tail_batch_size,
                     **peak, "predicted_bytes": plan.predicted_bytes, "budget_bytes": plan.budget_bytes,
                     "seconds": round(seconds, 3)})
    return {"model": {"parameters": model["parameters"], "dtype": dtype}, "weights_bytes": weights,
            "prefixes": plan.prefixes, "shared_tokens": plan.shared_tokens, "tail_tokens": plan.tail_tokens,
            "runs": runs}


def _timed_train(st: Stage, argv: list[str], warmup: int) -> dict:
    """``train.py ARGV`` in this process, with a clock on every optimiser step (a callback added to the Trainer
    the command builds): steps/s after ``warmup`` steps, and over the whole fit as the summary gives it."""
    import pytorch_lightning as pl

    from configs import parse_cli
    from policies.training import train

    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            st.sync()
            times.append(time.perf_counter())

    base = pl.Trainer

    class ClockedTrainer(base):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), Clock()], **kwargs)

    pl.Trainer = ClockedTrainer
    try:
        summary = train(parse_cli("train", argv))
    finally:
        pl.Trainer = base
    steady = None
    if len(times) > warmup + 1:
        steady = round((len(times) - 1 - warmup) / (times[-1] - times[warmup]), 2)
    return {"steps": summary.steps, "steps_per_s": steady, "warmup_steps": warmup,
            "fit_s": round(summary.seconds, 1), "fit_steps_per_s": round(summary.steps / max(summary.seconds, 1e-9), 2),
            "final_loss": summary.final_loss, "export": str(summary.export) if summary.export else None}


def _train_argv(st: Stage, shards: Path, out: Path, policy: str, c: dict, extra: list[str]) -> list[str]:
    return [f"data.shards={shards}", f"out={out}", f"policy={policy}", "weighting=none", "overwrite=true",
            f"trainer.max_steps={c['steps']}", f"data.batch_size={c['batch']}", f"data.num_workers={c['workers']}",
            f"data.steps_per_epoch={c['steps']}", "trainer.loggers=false", "trainer.progress_bar=false",
            f"trainer.accelerator={'gpu' if st.cuda else 'cpu'}", "trainer.precision=bf16-mixed", *extra]


def run_train(st: Stage) -> dict:
    from tests.fixtures.shards import write_tiny_shards

    c = st.cfg
    shards = write_tiny_shards(st.work / "train_shards", episodes=c["episodes"], length=c["length"], obs_steps=2,
                               horizon=16, image_size=(c["size"], c["size"]), image_format="jpg")
    out = {"shards": {"episodes": c["episodes"], "length": c["length"], "image_size": [c["size"], c["size"]]},
           "batch_size": c["batch"], "precision": "bf16-mixed"}
    for policy in ("act", "diffusion"):
        try:
            if policy == "diffusion":
                st.need("diffusers")
            extra = [*c[policy], "export=false"]
            out[policy] = _timed_train(st, _train_argv(st, shards, st.work / f"train_{policy}", policy, c, extra),
                                       c["warmup"])
            out[policy]["settings"] = extra[:-1]
        except Skip as exc:
            out[policy] = {"skipped": str(exc)}
    return out


def _lerobot_eval(st: Stage, export: Path, out: Path, episodes: int, timeout: float) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "lerobot.scripts.lerobot_eval", f"--policy.path={export}", "--env.type=metaworld",
           "--env.task=push-v3", f"--eval.n_episodes={episodes}", "--eval.batch_size=1",
           f"--policy.device={st.device}", '--rename_map={"observation.image": "observation.images.corner2"}',
           f"--output_dir={out}"]
    with open(st.work / "lerobot_eval.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env=dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl")))
    if proc.returncode != 0:
        tail = (st.work / "lerobot_eval.log").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"lerobot-eval exited {proc.returncode}: {' | '.join(tail)}")
    return cmd, json.loads((out / "eval_info.json").read_text())


def run_eval(st: Stage) -> dict:
    from configs import load_config
    from data.metaworld import sim as simlib
    from data.metaworld.corpus import generate

    c = st.cfg
    try:  # EGL: one offscreen render before anything else
        sim = simlib.MetaWorldSim("push-v3", image_size=(32, 32))
        sim.reset(0)
        sim.render()
        sim.close()
    except simlib.RenderingUnavailable as exc:
        raise Skip(f"no offscreen rendering (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}") from None
    times = {}
    t0 = time.perf_counter()
    corpus = st.work / "eval_corpus"
    generate(load_config("corpus", [f"out={corpus}", "task=push-v3", f"episodes={c['corpus_episodes']}",
                                    f"episode_length={c['corpus_length']}", f"image_size=[{c['size']},{c['size']}]",
                                    "overwrite=true"]), progress=False)
    times["corpus_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    from pipeline.annotate import annotate

    ann = st.work / "eval_annotation"
    result = annotate(load_config("annotate", [f"dataset.root={corpus}", f"out={ann}", "reward=column",
                                               "reward.column=next.reward", "window.obs_steps=1", "window.horizon=16",
                                               "plots=false", "progress_bar=false", "overwrite=true"]))
    if not result.ok:
        raise RuntimeError(f"annotation of the corpus failed: {result.failures}")
    times["annotate_s"] = round(time.perf_counter() - t0, 1)
    demo_like = [f"debug={c['debug']}"] if c.get("debug") else [
        "policy.pretrained_backbone_weights=null", "policy.dim_model=256", "policy.dim_feedforward=1024",
        "policy.n_encoder_layers=2", "policy.n_decoder_layers=1", "policy.use_vae=false", "policy.chunk_size=10",
        "policy.n_action_steps=10", "policy.optimizer_lr=3.0e-4", "policy.optimizer_lr_backbone=3.0e-4"]
    trained = _timed_train(st, _train_argv(st, ann, st.work / "eval_train", "act", c, demo_like), warmup=1)
    times["train_s"] = trained["fit_s"]
    t0 = time.perf_counter()
    left = max(30.0, float(os.environ.get("GPU_CHECK_DEADLINE", time.time() + 600)) - time.time() - 5)
    cmd, info = _lerobot_eval(st, Path(trained["export"]), st.work / "eval_out", c["rollouts"], left)
    times["lerobot_eval_s"] = round(time.perf_counter() - t0, 1)
    overall = info.get("overall") or info.get("aggregated") or {}
    return {"task": "push-v3", "corpus": {"episodes": c["corpus_episodes"], "length": c["corpus_length"],
                                          "image_size": [c["size"], c["size"]]},
            "train": {"steps": trained["steps"], "steps_per_s": trained["steps_per_s"], "settings": demo_like},
            "rollouts": c["rollouts"],
            "lerobot_eval": {k: overall.get(k) for k in ("pc_success", "avg_sum_reward", "avg_max_reward", "eval_s",
                                                         "eval_ep_s") if k in overall},
            "command": "MUJOCO_GL=egl lerobot-eval " + " ".join(a if "{" not in a else repr(a) for a in cmd[3:]),
            **times}


STAGE_FUNCTIONS = {"scoring": run_scoring, "annotate": run_annotate, "memory": run_memory, "train": run_train,
                   "eval": run_eval}


# ----------------------------------------------------------------------------------------------- the driver
def _last_lines(path: Path, n: int = 2) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").strip().splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:300] for ln in lines[-n:])


def run_stage(name: str, profile: str, device: str, work: Path, timeout: float) -> dict:
    """One stage in a child process (its own session, killed whole on timeout); its JSON line."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result, log = logs / f"{name}.json", logs / f"{name}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "stage", name, "--profile", profile, "--device", device,
           "--work", str(work), "--result", str(result)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               GPU_CHECK_DEADLINE=str(time.time() + timeout))
    env.setdefault("MUJOCO_GL", "egl")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"stage": name, "failed": f"timed out after {timeout:.0f} s", "log": str(log),
                    "seconds": round(time.perf_counter() - t0, 1)}
    seconds = round(time.perf_counter() - t0, 1)
    if rc != 0 or not result.exists():
        return {"stage": name, "failed": f"exit code {rc}: {_last_lines(log)}", "log": str(log), "seconds": seconds}
    return {"stage": name, **json.loads(result.read_text()), "seconds": seconds}


def run(device: str, profile: str, stages: list[str], work: Path | None, budget_s: float | None = None) -> list[dict]:
    """Run the stages in order, printing one JSON line each; returns the lines."""
    prof = PROFILES[profile]
    budget = float(budget_s if budget_s is not None else prof["budget_s"])
    timeouts = dict(prof["timeouts"])
    timeouts.update({s: float(v) for s, v in _pairs(os.environ.get("GPU_CHECK_TIMEOUTS", ""))})
    deadline = time.monotonic() + budget
    lines = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(work) if work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in stages:
            left = deadline - time.monotonic()
            if left < min(20.0, timeouts[name]):
                line = {"stage": name, "skipped": f"no time left in the {budget:.0f} s budget of all stages"}
            else:
                line = run_stage(name, profile, device, work, min(timeouts[name], left))
            print(json.dumps(line), flush=True)
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the stages, one JSON line each")
    r.add_argument("--device", default=os.environ.get("GPU_CHECK_DEVICE", "cuda"), choices=("cuda", "cpu"))
    r.add_argument("--profile", default=os.environ.get("GPU_CHECK_PROFILE"), choices=sorted(PROFILES),
                   help="model and data sizes (default: 2b on cuda, tiny on cpu)")
    r.add_argument("--stages", default=os.environ.get("GPU_CHECK_STAGES", ",".join(STAGES)))
    r.add_argument("--work", default=os.environ.get("GPU_CHECK_WORK"), help="work folder (default: a temporary one)")
    r.add_argument("--budget-s", type=float, default=os.environ.get("GPU_CHECK_BUDGET_S"))
    s = sub.add_parser("stage", help=argparse.SUPPRESS)
    s.add_argument("name", choices=STAGES)
    s.add_argument("--profile", required=True)
    s.add_argument("--device", required=True)
    s.add_argument("--work", required=True)
    s.add_argument("--result", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "stage":
        return stage_main(args.name, args.profile, args.device, Path(args.work), Path(args.result))
    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    unknown = [x for x in stages if x not in STAGES]
    if unknown:
        ap.error(f"unknown stages {unknown}; valid: {', '.join(STAGES)}")
    profile = args.profile or ("2b" if args.device == "cuda" else "tiny")
    run(args.device, profile, stages, args.work, args.budget_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
