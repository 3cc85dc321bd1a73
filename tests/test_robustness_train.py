"""What a user's mistakes and crashes do to training: run folders claimed one way, exact resume after a kill
with loader workers, errors that name the file or key, mismatched resumes and evaluations refused."""

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from configs import ConfigError, load_config
from configs.outputs import OutputError
from policies.run_folder import CheckpointError
from policies.training import build, train
from tests.fixtures.bc import tiny_cfg
from tests.fixtures.shards import write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("rb_shards"), episodes=4, length=16, obs_steps=2, horizon=8,
                             images=False)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------ output folders
def test_rerun_into_a_run_folder_is_claimed_one_way(shards, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(shards, out, "act", "none", steps=2))
    # another config: refused, naming the key that differs
    with pytest.raises(OutputError, match=r"seed: 0 -> 1.*overwrite=true"):
        train(tiny_cfg(shards, out, "act", "none", "seed=1", steps=2))
    # the same config without resume=: refused, it would start over beside the old checkpoints
    with pytest.raises(ConfigError, match=r"resume=.*last\.ckpt.*overwrite=true"):
        train(tiny_cfg(shards, out, "act", "none", steps=2))
    # overwrite: the old run's files go, no last-v1.ckpt, and last.ckpt is the new run's
    summary = train(tiny_cfg(shards, out, "act", "none", "seed=1", "overwrite=true", steps=4))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]
    assert summary.checkpoint == out / "checkpoints" / "last.ckpt"
    assert _state(summary.checkpoint)["global_step"] == 4
    assert json.loads((out / "run.json").read_text())["identity"]["config"]["seed"] == 1
    # resume= into the same folder continues the run, here for longer
    more = train(tiny_cfg(shards, out, "act", "none", "seed=1", f"resume={summary.checkpoint}", steps=6))
    assert more.steps == 6 and _state(out / "checkpoints" / "last.ckpt")["global_step"] == 6
    # overwrite=true with resume= inside the folder would delete the checkpoint it resumes from
    with pytest.raises(ConfigError, match="overwrite=true would delete"):
        train(tiny_cfg(shards, out, "act", "none", "seed=1", "overwrite=true", f"resume={summary.checkpoint}"))


def test_foreign_folder_is_refused(shards, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"notes\.txt.*not written by a topbc command"):
        train(tiny_cfg(shards, out, "act", "none", steps=2))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------ exact resume with workers
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from policies.module import BCModule
    import train
    kill_at = int(os.environ["KILL_AT_STEP"])
    real = BCModule.training_step
    def step(self, batch, batch_idx):
        if self.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a power cut or the OOM killer
        return real(self, batch, batch_idx)
    BCModule.training_step = step
    sys.exit(train.main(sys.argv[1:]))
""")


def _cli(shards, out, *extra, steps=12):
    args = [f"data.shards={shards}", f"out={out}", "policy=act", "weighting=awr", "debug=tiny_act",
            f"trainer.max_steps={steps}", "data.steps_per_epoch=8", "data.batch_size=8", "data.num_workers=2",
            "trainer.checkpoint_every_n_steps=5", "export=false"]
    return [*args, *extra]


def _run(args, env_extra=None):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**env, "KILL_AT_STEP": env.get("KILL_AT_STEP", "-1")})


def _steps(out):
    with (out / "logs" / "metrics.csv").open(newline="") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh) if r.get("train/loss")]


@pytest.mark.slow
def test_kill_and_resume_with_workers_is_exact(shards, tmp_path):
    """data.num_workers=2, checkpoint at step 5 (mid-epoch of 8: the next batch is worker 1's), SIGKILL at step 7,
    resume: the weights equal an uninterrupted run's bit for bit, and metrics.csv holds every step once. Before
    the loader position was kept per worker, the resumed loader gave worker 0 the first turn (batches 6, 5, 8,
    7, ...), which the negative control replays."""
    full = tmp_path / "full"
    res = _run(_cli(shards, full))
    assert res.returncode == 0, res.stderr[-3000:]
    killed = tmp_path / "killed"
    res = _run(_cli(shards, killed), {"KILL_AT_STEP": "7"})
    assert res.returncode == -9, res.stderr[-3000:]
    ckpt = killed / "checkpoints" / "last.ckpt"
    saved = _state(ckpt)
    assert saved["global_step"] == 5
    loader = saved["ShardDataModule"]["loader"]
    assert loader == {"epoch": 0, "step": 5, "workers": 2, "served": [3, 2], "next_worker": 1}
    # the negative control resumes from a copy that forgets which worker serves next
    wrong = dict(saved, ShardDataModule={"loader": {**loader, "next_worker": 0}})
    torch.save(wrong, tmp_path / "wrong.ckpt")
    res = _run(_cli(shards, killed, f"resume={ckpt}"))
    assert res.returncode == 0, res.stderr[-3000:]
    control = tmp_path / "control"
    res = _run(_cli(shards, control, f"resume={tmp_path / 'wrong.ckpt'}"))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b, c = (_state(d / "checkpoints" / "last.ckpt") for d in (full, killed, control))
    assert a["global_step"] == b["global_step"] == c["global_step"] == 12
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])
    assert _steps(killed) == _steps(full) == sorted(set(_steps(full))), (_steps(killed), _steps(full))
    assert len(_steps(full)) == 12


def test_loader_position_serves_the_uninterrupted_order(monkeypatch):
    """Without processes: the batches a resumed stream serves, in the loader's round-robin order of workers,
    are the uninterrupted epoch's from the resume step on, for 1-3 workers and every step of a 7-batch epoch."""
    from types import SimpleNamespace

    import data.batches as batches
    from data.batches import ShardStream, WindowNeeds, loader_position

    def samples(self):  # sample n of logical worker w is the epoch's batch w + n * workers (batch size 1)
        logical, nw = self.worker()
        return iter(logical + nw * n for n in range(100))

    monkeypatch.setattr(ShardStream, "samples", samples)
    monkeypatch.setattr(batches, "collate", lambda items: items[0])
    for nw in (1, 2, 3):
        for step in range(7):
            queues = []
            for wid in range(nw):
                stream = ShardStream([], WindowNeeds(1, 1), batch_size=1, steps_per_epoch=7)
                stream.restore(loader_position(step, 7, nw))
                monkeypatch.setattr(batches, "get_worker_info", lambda w=wid, n=nw: SimpleNamespace(id=w, num_workers=n))
                queues.append(list(stream))
            served = []
            while any(queues):  # the DataLoader's round-robin over its workers, from worker 0
                for q in queues:
                    if q:
                        served.append(q.pop(0))
            assert served == list(range(step, 7)), (nw, step, served)


# ------------------------------------------------------------------------------------ errors naming the fix
def test_corrupt_checkpoint_is_named(shards, tmp_path, capsys):
    from policies import export

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=rf"resume={bad}.*cannot be read.*truncated"):
        train(tiny_cfg(shards, tmp_path / "run", "act", "none", f"resume={bad}"))
    assert not (tmp_path / "run").exists()
    out = tmp_path / "export"
    assert export.main([str(bad), str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "Traceback" not in err
    assert not out.exists()


def test_typed_values_are_checked_once(shards, tmp_path, capsys):
    import train as cli

    assert cli.main([f"data.shards={shards}", f"out={tmp_path / 'o'}", "trainer.max_steps=ten"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trainer.max_steps='ten' must be an integer" in err, err
    with pytest.raises(ConfigError, match=r"data.batch_size=2.5 must be an integer"):
        train(tiny_cfg(shards, tmp_path / "o", "act", "none", "data.batch_size=2.5"))
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ silent mismatches
def test_resume_on_other_shards_or_weighting_is_refused(shards, tmp_path):
    other = write_tiny_shards(tmp_path / "other", episodes=2, length=16, obs_steps=2, horizon=8, images=False)
    first = train(tiny_cfg(shards, tmp_path / "a", "act", "none", steps=2))
    with pytest.raises(CheckpointError, match=r"data\.shards.*force=true"):
        train(tiny_cfg(other, tmp_path / "b", "act", "none", f"resume={first.checkpoint}", steps=4))
    with pytest.raises(CheckpointError, match=r"weighting: \{'name': 'none'\}.*'awr'"):
        train(tiny_cfg(shards, tmp_path / "c", "act", "awr", f"resume={first.checkpoint}", steps=4))
    forced = train(tiny_cfg(shards, tmp_path / "d", "act", "awr", f"resume={first.checkpoint}", "force=true",
                            steps=4))
    assert forced.steps == 4


def test_evaluating_an_export_on_another_task_is_refused(shards, tmp_path, capsys):
    from policies.evaluation.run import main as evaluate_main

    module, _, _ = build(tiny_cfg(shards, tmp_path / "run", "act", "none", steps=1))
    export = module.export(tmp_path / "export")
    assert json.loads((export / "topbc.json").read_text())["tasks"] == ["reach the goal"]
    assert evaluate_main([f"policy={export}", "env.task=push-v3", f"out={tmp_path / 'ev'}", "episodes=1"]) == 2
    err = capsys.readouterr().err
    assert "trained on 'reach the goal'" in err and "env.task=push-v3" in err and "force=true" in err
    assert not (tmp_path / "ev").exists()


# ------------------------------------------------------------------------------------ sizes and defaults
def test_last_ckpt_is_the_only_checkpoint(shards, tmp_path):
    """last.ckpt is the run's one full checkpoint (weights + optimiser state + loader position, for exact resume).

    A 10-step default ACT (51M parameters) wrote checkpoints/step0000010.ckpt, 619 MB (the Adam moments are
    two thirds of it), with last.ckpt a link to it, and a re-run added last-v1.ckpt, another 619 MB. Now:
    last.ckpt alone, 619 MB per run folder; a full checkpoint cannot be smaller without losing exact resume,
    and the export (weights only) is a third of it."""
    summary = train(tiny_cfg(shards, tmp_path / "run", "act", "none", steps=6, steps_per_epoch=2))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    assert not summary.checkpoint.is_symlink()
    ck = _state(summary.checkpoint)
    assert ck["global_step"] == 6 and ck["optimizer_states"][0]["state"]


def test_out_is_required(shards, tmp_path, capsys):
    from policies.evaluation.run import main as evaluate_main

    with pytest.raises(ConfigError, match="out is not set"):
        train(load_config("train", [f"data.shards={shards}", "debug=tiny_act", "trainer.max_steps=1"]))
    assert evaluate_main(["policy=expert", "episodes=1"]) == 2
    assert "out is not set" in capsys.readouterr().err


def test_cli_goes_through_the_shared_runner(shards, tmp_path, capsys):
    import train as cli

    assert cli.main([f"data.shards={shards}", f"out={tmp_path / 'o'}", "trainer.max_steps=ten", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err  # --debug keeps the traceback
    line = cli.interrupted([f"data.shards={shards}", f"out={tmp_path / 'o'}", "resume=old.ckpt"])
    assert f"resume={tmp_path / 'o' / 'checkpoints' / 'last.ckpt'}" in line and "old.ckpt" not in line


def test_training_summary_without_an_export_says_how_to_make_one(tmp_path):
    from policies.training import TrainSummary

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    base = dict(run_dir=tmp_path, steps=3, seconds=1.0, final_loss=0.5, checkpoint=ckpt)
    text = TrainSummary(**base, export=None).text()
    assert f"export      none (export=false); make one with: python -m policies.export {ckpt} OUT" in text
    assert "None" not in text
    # control: with an export the line gives lerobot's --policy.path
    assert f"--policy.path={tmp_path / 'export'}" in TrainSummary(**base, export=tmp_path / "export").text()


def test_a_truncated_shard_read_by_loader_workers_is_one_clear_line(tmp_path, capsys):
    """With data.num_workers=2 the reader's error arrives wrapped in the worker's traceback (torch's
    ExceptionWrapper); the command prints the reader's own message, naming the shard and what to do."""
    import train as train_cmd

    shards = write_tiny_shards(tmp_path / "shards", episodes=4, length=24)
    path = sorted((shards / "shards").glob("*.tar"))[1]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rc = train_cmd.main([f"data.shards={shards}", f"out={tmp_path / 'run'}", "debug=tiny_act", "trainer.max_steps=20",
                         "data.num_workers=2"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1, err
    assert f"shard {path} is corrupt or truncated" in lines[0] and "re-run pipeline.annotate" in lines[0]
    assert "Traceback" not in err and "DataLoader worker process" in lines[0]


def test_error_message_keeps_other_messages_whole():
    from configs.commands import error_message

    assert error_message(ConfigError("out is not set\nsecond line")) == "out is not set\nsecond line"  # negative control
