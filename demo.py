"""``make demo``: the whole pipeline on a simulated, mixed-quality corpus, end to end and offline.

    python demo.py [key=value ...]        # keys of configs/demo.yaml; `make demo` runs it

1. corpus: MetaWorld scripted expert with deliberately spoiled episodes, a LeRobot v3 dataset (cached);
2. annotate: per-frame progress from the simulator's own dense reward (``reward=column``: no VLM weights can be
   loaded here; ``reward=topreward reward_model=Qwen/Qwen3-VL-8B-Instruct`` where they can);
3. train: lerobot's ACT with reward-aligned weighting (``episode_quality``), exported as a lerobot policy folder;
4. evaluate: rollouts of the export in the simulator (and the scripted expert / a random policy on the same seeds);
5. report: ``OUT/report.md`` with the table, the reward report and the plots.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from configs import ConfigError, UserError, load_config, parse_cli, save_config
from configs.outputs import claim_output
from data.quality_labels import LABELS_FILE
from pipeline.report import fmt

# what each choice of policy inputs adds to the stages' overrides (configs/demo.yaml, `inputs`)
INPUTS = {
    "state": {"corpus": ["environment_state=true"], "annotate": ["dataset.cameras=[]"], "train": [],
              "evaluate": []},
    "image": {"corpus": [], "annotate": [], "train": [], "evaluate": []},
}


def stage_overrides(cfg: DictConfig, stage: str) -> list[str]:
    if cfg.inputs not in INPUTS:
        raise ConfigError(f"inputs={cfg.inputs!r}; valid: {', '.join(INPUTS)}")
    extra = list(INPUTS[cfg.inputs][stage])
    if stage == "annotate" and cfg.reward != "column":
        if not cfg.reward_model:
            raise ConfigError(f"reward={cfg.reward} needs reward_model=HUB_ID_OR_FOLDER (a Qwen3-VL checkpoint)")
        extra.append(f"reward.model={cfg.reward_model}")
    return [*cfg[stage], *extra]


def stage_config(name: str, overrides) -> DictConfig:
    return load_config(name, [str(o) for o in overrides])


def _loss_curve(train_dir: Path, path: Path) -> Path | None:
    import csv

    metrics = train_dir / "logs" / "metrics.csv"
    if not metrics.exists():
        return None
    steps, losses = [], []
    with metrics.open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["train/loss"]))
    if not steps:
        return None
    from pipeline.plots import figure

    fig = figure(5, 3, dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _pct(r: dict) -> str:
    return f"{100 * r['success_rate']:.0f}% [{100 * r['ci_low']:.0f}, {100 * r['ci_high']:.0f}]"


def write_demo_report(cfg: DictConfig, out: Path, stages: dict) -> Path:
    """``OUT/report.md``: one row per stage, the reference policies, the files, the plots, how to rerun."""
    corpus, ann, tr, ev, refs, quality = (stages.get(k) for k in ("corpus", "annotation", "train", "eval",
                                                                 "references", "reward_report"))
    lines = [f"# topbc demo: {cfg.task}", "",
             f"{cfg.episodes} demonstrations of mixed quality → `{cfg.reward}` progress → ACT on {cfg.inputs} with "
             f"`{cfg.weighting}` weighting, {tr['steps']} steps → {cfg.rollouts} simulator rollouts.", "",
             "| stage | result | time |", "|---|---|---|"]
    q = corpus["qualities"]
    lines.append(f"| corpus | {', '.join(f'{k} {v}' for k, v in q.items())}; "
                 f"{corpus['successes']}/{corpus['episodes']} succeed | {corpus['seconds']:.0f} s |")
    lines.append(f"| annotation | {ann['episodes']} episodes, {ann['frames']} frames; VOC vs time "
                 f"{fmt(quality['voc_mean'])}, vs `next.reward` {fmt(quality['voc_ground_truth_mean'])}; success "
                 f"detection AUROC {fmt(quality['auroc'])} | {ann['seconds']:.0f} s |")
    lines.append(f"| training | {tr['steps']} steps, final loss {fmt(tr['final_loss'], 4)} | {tr['seconds']:.0f} s |")
    lines.append(f"| **policy (ACT, {cfg.weighting})** | **{_pct(ev)}** success, mean return "
                 f"{ev['mean_return']:.1f} | {ev['seconds']:.0f} s |")
    for name, r in (refs or {}).items():
        lines.append(f"| {name} (reference) | {_pct(r)} success | {r['seconds']:.0f} s |")
    lines += ["", "Success rates are over the same seeds (from 1000, 95% Wilson intervals).", "",
              "## Files", "",
              f"- corpus: `{corpus['dir']}` (LeRobot v3; quality labels in `{LABELS_FILE}`)",
              f"- annotation: `{out / 'annotation'}` (shards, manifest, `progress.parquet`, `plots/index.html`)",
              f"- reward report: `{out / 'annotation' / 'report' / 'report.md'}`",
              f"- export (lerobot policy folder): `{tr['export']}`",
              f"- evaluation: `{out / 'eval' / 'eval.json'}`, videos: "
              + ", ".join(f"`{out / 'eval' / v}`" for v in ev.get("videos", [])), "",
              "## Progress of every demonstration", "", "![progress](annotation/plots/overview.png)", ""]
    if (out / "loss.png").exists():
        lines += ["## Training loss", "", "![loss](loss.png)", ""]
    for name in ("voc_hist.png", "worst_episodes.png"):
        if (out / "annotation" / "report" / name).exists():
            lines += [f"![{name}](annotation/report/{name})", ""]
    lines += ["## Run it yourself", "", "```bash",
              f"python -m policies.evaluate policy={tr['export']} env.task={cfg.task} episodes=50 out=outputs/eval"]
    if cfg.inputs == "image":  # lerobot's MetaWorld env gives the camera and the 4-d state only
        lines += [f"MUJOCO_GL=egl lerobot-eval --policy.path={tr['export']} --env.type=metaworld "
                  f"--env.task={cfg.task} \\",
                  "  --eval.n_episodes=10 --eval.batch_size=1 --policy.device=cpu \\",
                  "  --rename_map='{\"observation.image\": \"observation.images.corner2\"}'"]
    lines += ["```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def run(cfg: DictConfig) -> dict:
    from data.metaworld.corpus import generate as generate_corpus
    from data.quality_labels import read_quality_labels
    from pipeline.annotate import annotate
    from pipeline.report import write_report as write_reward_report
    from policies.evaluation import evaluate
    from policies.training import train

    out = Path(cfg.out)
    # every demo run is the same "run": a demo folder is continued (its stages cache their work), a foreign
    # folder refused before anything is written
    claim_output(out, {}, overwrite=False, kind="demo", ours=())
    save_config(cfg, out)
    stages: dict = {}

    # configs are composed first, so a bad override fails before any work is done
    c_corpus = stage_config("corpus", stage_overrides(cfg, "corpus"))
    c_ann = stage_config("annotate", stage_overrides(cfg, "annotate"))
    c_train = stage_config("train", stage_overrides(cfg, "train"))
    c_eval = stage_config("evaluate", stage_overrides(cfg, "evaluate"))

    print(f"[1/5] corpus: {cfg.episodes} MetaWorld {cfg.task} episodes → {c_corpus.out}", flush=True)
    t0 = time.perf_counter()
    root = generate_corpus(c_corpus)
    labels = read_quality_labels(root)
    eps = labels["episodes"]
    qualities: dict[str, int] = {}
    for e in eps:
        qualities[e["quality"]] = qualities.get(e["quality"], 0) + 1
    stages["corpus"] = {"dir": str(root), "episodes": len(eps), "successes": sum(bool(e["success"]) for e in eps),
                        "qualities": qualities, "seconds": time.perf_counter() - t0}

    print(f"[2/5] annotate with reward={cfg.reward} → {c_ann.out}", flush=True)
    t0 = time.perf_counter()
    result = annotate(c_ann)
    if not result.ok:
        raise RuntimeError(f"annotation failed for episodes {[f['episode_index'] for f in result.failures]}: "
                           f"{result.failures[0]['reason']}")
    stages["annotation"] = {"episodes": len(result.episodes_ok), "frames": result.frames,
                            "seconds": time.perf_counter() - t0}
    stages["reward_report"] = write_reward_report(c_ann.out, labels="next.success")

    print(f"[3/5] train ACT with weighting={cfg.weighting} for {cfg.steps} steps → {c_train.out}", flush=True)
    c_train.overwrite = True  # the demo's own previous training run (and nothing else): start fresh
    summary = train(c_train)
    stages["train"] = {"steps": summary.steps, "seconds": summary.seconds, "final_loss": summary.final_loss or float("nan"),
                       "export": str(summary.export)}
    _loss_curve(Path(c_train.out), out / "loss.png")

    print(f"[4/5] evaluate the export: {cfg.rollouts} rollouts → {c_eval.out}", flush=True)
    c_eval.overwrite = True  # the demo's own previous evaluation, if its settings changed
    stages["eval"] = evaluate(c_eval)
    if cfg.references:
        refs = {}
        for name in ("expert", "random"):
            ref_cfg = stage_config("evaluate", [*stage_overrides(cfg, "evaluate"), f"policy={name}", "videos=0",
                                                f"out={out / ('eval_' + name)}", "overwrite=true"])
            refs[name] = evaluate(ref_cfg, progress=False)
        stages["references"] = refs

    print("[5/5] report", flush=True)
    report = write_demo_report(cfg, out, stages)
    (out / "demo.json").write_text(json.dumps(stages, indent=1, default=str))
    stages["report"] = str(report)
    return stages


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from configs.commands import quiet_libraries

    quiet_libraries()
    try:
        cfg = parse_cli("demo", argv)
        OmegaConf.resolve(cfg)
        t0 = time.perf_counter()
        stages = run(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ev, refs = stages["eval"], stages.get("references", {})
    print(f"\n{'policy':<28}{'success':>22}")
    print(f"{'ACT + ' + cfg.weighting:<28}{_pct(ev):>22}")
    for name, r in refs.items():
        print(f"{name + ' (reference)':<28}{_pct(r):>22}")
    print(f"\ndemo finished in {(time.perf_counter() - t0) / 60:.1f} min; report: {stages['report']}")
    print(f"export (lerobot --policy.path): {stages['train']['export']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
