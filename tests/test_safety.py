"""Nothing deleted that is not ours, no request trusted that we did not serve: output folders claimed by their own
record, the review server answering its own page only, labels files read as spreadsheets save them, runs that
would learn nothing refused, shards checked against the manifest, options that need another refused without it,
the judge loaded only where something needs judging, one folder one process, and one line for a full disk."""

from __future__ import annotations

import errno
import http.client
import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from configs import UserError, load_config
from configs.outputs import LOCK_FILE, OutputError, claim_output
from data.shards import ShardError, tar_samples
from data.success_labels import MAX_NOTE, LabelsError, episode_labels, read_labels
from policies.training import build, train
from tests.fixtures.bc import tiny_cfg
from tests.fixtures.serving import serving
from tests.fixtures.shards import write_tiny_shards
from tests.test_review import make_review_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("safety_shards"), episodes=4, length=16, obs_steps=2,
                             horizon=8, images=False)


def foreign_folder(root: Path, *names: str) -> Path:
    """A user's folder holding files and folders with the names our commands write, but no run.json."""
    root.mkdir(parents=True)
    for name in names:
        if "." in name:
            (root / name).write_text("the user's own")
        else:
            (root / name).mkdir()
            (root / name / "keep.txt").write_text("the user's own")
    return root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------ 1. overwrite never deletes a foreign folder
def test_overwrite_refuses_a_folder_no_topbc_command_made(shards, tmp_path):
    out = foreign_folder(tmp_path / "mine", "logs", "export", "checkpoints", "config.yaml")
    before = listing(out)
    with pytest.raises(OutputError) as info:
        train(tiny_cfg(shards, out, "act", "none", "overwrite=true", steps=2))
    assert "not written by a topbc command" in str(info.value)
    assert "set overwrite=true" not in str(info.value)  # the refusal never recommends deleting it
    assert listing(out) == before
    # the same for every command's kind and its usual names (annotate's, recorded evaluation's)
    for kind, ours in (("annotate", ("shards", "manifest.json")), ("evaluate-recordings", ("videos", "report.md"))):
        other = foreign_folder(tmp_path / kind, *ours)
        with pytest.raises(OutputError, match="not written by a topbc command"):
            claim_output(other, {"x": 1}, overwrite=True, kind=kind, ours=ours)
        assert listing(other) == sorted([*ours, *(f"{n}/keep.txt" for n in ours if "." not in n)])


def test_overwrite_still_replaces_a_run_a_topbc_command_made(tmp_path):
    """Negative control: a folder of our own run of the same kind is still cleaned, and only its own entries."""
    out = tmp_path / "run"
    claim_output(out, {"seed": 0}, overwrite=False, kind="train", ours=("logs",))
    (out / "logs").mkdir()
    (out / "logs" / "metrics.csv").write_text("step\n")
    (out / "user_notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"seed: 0 -> 1.*overwrite=true"):
        claim_output(out, {"seed": 1}, overwrite=False, kind="train", ours=("logs",))
    assert claim_output(out, {"seed": 1}, overwrite=True, kind="train", ours=("logs",)) == "new"
    assert not (out / "logs").exists() and (out / "user_notes.txt").read_text() == "mine"
    assert json.loads((out / "run.json").read_text())["identity"] == {"seed": 1}


def test_corpus_overwrite_refuses_a_foreign_folder(tmp_path):
    from data.metaworld.corpus import generate

    out = foreign_folder(tmp_path / "data", "meta", "notes.txt")
    before = listing(out)
    cfg = load_config("corpus", [f"out={out}", "overwrite=true", "episodes=2", "camera=null"])
    with pytest.raises(UserError, match="not a corpus written by python -m data.demo"):
        generate(cfg, progress=False)
    assert listing(out) == before
    # a staging folder beside it that the command did not mark is not deleted either
    staging = tmp_path / ".fresh.partial"
    staging.mkdir()
    (staging / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="was not made by python -m data.demo"):
        generate(load_config("corpus", [f"out={tmp_path / 'fresh'}", "episodes=2", "camera=null"]), progress=False)
    assert (staging / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------ 2. simulator evaluation claims its folder
def test_evaluate_refuses_a_foreign_folder_and_replaces_only_its_own(tmp_path):
    from policies.evaluation.run import evaluate

    args = ["policy=random", "episodes=1", "max_steps=3", "videos=0", "env.image_size=[32,32]"]
    out = foreign_folder(tmp_path / "ev", "config.yaml", "eval.json")
    with pytest.raises(OutputError, match="not written by a topbc command"):
        evaluate(load_config("evaluate", [*args, f"out={out}"]), progress=False)
    assert (out / "eval.json").read_text() == "the user's own"
    # negative control: its own folder is re-used by the same evaluation, refused to another, replaced on request
    ours = tmp_path / "ours"
    evaluate(load_config("evaluate", [*args, f"out={ours}"]), progress=False)
    first = json.loads((ours / "eval.json").read_text())
    assert first["episodes"] == 1
    with pytest.raises(OutputError, match=r"seed: 1000 -> 1001"):
        evaluate(load_config("evaluate", [*args, f"out={ours}", "seed=1001"]), progress=False)
    evaluate(load_config("evaluate", [*args, f"out={ours}", "seed=1001", "overwrite=true"]), progress=False)
    assert json.loads((ours / "eval.json").read_text())["seeds"] == [1001]


# ------------------------------------------------------------------ 3/4. the review server answers its own page
@pytest.fixture
def server(tmp_path):
    from policies.evaluation.review import make_server

    srv = make_server(make_review_dir(tmp_path), port=0)
    with serving(srv):
        yield srv


def raw(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """One request with exactly these headers and body bytes; the answer's status and JSON."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data.startswith(b"{") else {})
    finally:
        conn.close()


def label_body(note: str = "", success=True) -> bytes:
    return json.dumps({"policy": "act_a", "episode_index": 0, "success": success, "note": note}).encode()


def own(srv, body: bytes, **extra) -> dict:
    host = f"127.0.0.1:{srv.server_address[1]}"
    return {"Host": host, "Content-Type": "application/json", "Content-Length": str(len(body)), **extra}


def test_writes_from_other_origins_and_hosts_are_refused(server):
    body = label_body()
    foreign = [
        own(server, body, **{"Content-Type": "text/plain"}),  # a no-cors fetch
        own(server, body, **{"Content-Type": "application/x-www-form-urlencoded"}),  # an HTML form
        own(server, body, Origin="http://evil.example"),  # another origin
        own(server, body, **{"Sec-Fetch-Site": "cross-site"}),
        own(server, body, Host=f"evil.example:{server.server_address[1]}"),  # DNS rebinding
    ]
    codes = [raw(server, "POST", "/api/label", body, h)[0] for h in foreign]
    assert codes == [415, 415, 403, 403, 421]
    assert read_labels(server.labels) == {}  # none of them wrote
    # reading through a rebound name is refused too
    assert raw(server, "GET", "/api/episodes", None, {"Host": f"evil.example:{server.server_address[1]}"})[0] == 421
    # negative control: the page's own request (same origin) writes
    status, answer = raw(server, "POST", "/api/label", body,
                         own(server, body, Origin=f"http://127.0.0.1:{server.server_address[1]}",
                             **{"Sec-Fetch-Site": "same-origin"}))
    assert status == 200 and read_labels(server.labels)[("act_a", 0)].success is True
    assert raw(server, "GET", "/api/episodes", None, {"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_malformed_bodies_get_a_400_with_a_reason(server):
    cases = [
        (b"\xff\xfe\x00{", 400, "not UTF-8"),
        (b"[" * 20000 + b"]" * 20000, 400, "not JSON"),
        (b'"just a string"', 400, "JSON object"),
    ]
    for body, code, reason in cases:
        status, answer = raw(server, "POST", "/api/label", body, own(server, body))
        assert (status, reason in answer.get("error", "")) == (code, True), (body[:10], status, answer)
    for length, code in (("abc", 400), ("-5", 400), (str(10**9), 413)):
        status, answer = raw(server, "POST", "/api/label", b"{}", own(server, b"{}", **{"Content-Length": length}))
        assert status == code and answer["error"]
    status, _ = raw(server, "POST", "/api/label", b"", {"Host": own(server, b"")["Host"],
                                                           "Content-Type": "application/json"})
    assert status == 411
    assert read_labels(server.labels) == {}
    # the server still answers afterwards
    assert raw(server, "GET", "/api/episodes", None, {"Host": own(server, b"")["Host"]})[0] == 200


def test_a_long_note_is_refused_and_a_long_one_on_disk_can_be_cleared(server):
    long = "x" * (MAX_NOTE + 1)
    status, answer = raw(server, "POST", "/api/label", label_body(long), own(server, label_body(long)))
    assert status == 400 and str(MAX_NOTE) in answer["error"]
    huge = "y" * 200_000  # over the body limit
    assert raw(server, "POST", "/api/label", label_body(huge), own(server, label_body(huge)))[0] == 413
    assert read_labels(server.labels) == {}
    # a file holding a note past csv's default field limit (written by hand) is still read, and cleared
    server.labels.write_text(f"policy,episode_index,success,note\nact_a,0,1,{'z' * 200_000}\n")
    assert len(read_labels(server.labels)[("act_a", 0)].note) == 200_000
    body = label_body("", success=True)
    assert raw(server, "POST", "/api/label", body, own(server, body))[0] == 200
    assert read_labels(server.labels)[("act_a", 0)].note == ""


def test_two_servers_on_one_folder_lose_no_label(tmp_path):
    from policies.evaluation.review import make_server

    folder = make_review_dir(tmp_path)
    servers = [make_server(folder, port=0) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    keys = [(p, e) for p in ("act_a", "act_b") for e in (0, 1)]
    results = []

    def post(srv, key, note):
        body = json.dumps({"policy": key[0], "episode_index": key[1], "success": True, "note": note}).encode()
        results.append(raw(srv, "POST", "/api/label", body, own(srv, body))[0])

    threads = [threading.Thread(target=post, args=(servers[i % 2], k, f"n{r}"))
               for r in range(5) for i, k in enumerate(keys)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in servers:
        s.shutdown()
        s.server_close()
    assert results == [200] * len(threads)
    assert sorted(read_labels(folder / "labels.csv")) == sorted(keys)
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ 5. a spreadsheet's labels file
def test_labels_with_a_byte_order_mark_read_as_without(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    text = "policy,episode_index,success,note\nact,0,1,fine\nact,1,0,\n"
    plain.write_text(text, encoding="utf-8")
    bom.write_text(text, encoding="utf-8-sig")
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_labels(bom) == read_labels(plain)
    assert set(read_labels(bom)) == {("act", 0), ("act", 1)}  # policy "act", not ""
    one = tmp_path / "one.csv"
    one.write_text("episode_index,success\n2,1\n3,0\n", encoding="utf-8-sig")
    assert episode_labels(one) == {2: True, 3: False}


def test_train_reports_a_bad_labels_file_in_one_line(shards, tmp_path):
    labels = tmp_path / "conflict.csv"
    labels.write_text("episode_index,success\n0,1\n0,0\n", encoding="utf-8-sig")
    args = [f"data.shards={shards}", f"out={tmp_path / 'run'}", "policy=act", "debug=tiny_act", "weighting=none",
            f"labels={labels}", "trainer.max_steps=2", "export=false"]
    proc = subprocess.run([sys.executable, "-c", "import sys, train; sys.exit(train.main(sys.argv[1:]))", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "labelled twice, differently" in proc.stderr


def test_unreadable_csv_is_a_labels_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"policy,episode_index,success\nact,0,\xff\n")
    with pytest.raises(LabelsError, match="not UTF-8"):
        read_labels(bad)


# ------------------------------------------------------------------ 6. nothing to learn is refused
@pytest.mark.parametrize("weighting", ["none", "awr"])
def test_every_episode_labelled_failed_is_refused_before_anything_is_written(shards, tmp_path, weighting):
    labels = tmp_path / "labels.csv"
    labels.write_text("episode_index,success\n" + "".join(f"{e},0\n" for e in range(4)))
    out = tmp_path / "run"
    with pytest.raises(UserError, match="every sample weighs 0.*4 of the 4 episodes failed"):
        train(tiny_cfg(shards, out, "act", weighting, f"labels={labels}", steps=2))
    assert not out.exists()
    # negative control: one success left, and the run builds
    labels.write_text("episode_index,success\n" + "".join(f"{e},{int(e == 2)}\n" for e in range(4)))
    module, _, _ = build(tiny_cfg(shards, out, "act", weighting, f"labels={labels}", steps=2))
    assert sorted(module.left_out.tolist()) == [0, 1, 3]


# ------------------------------------------------------------------ 7. shards checked against the manifest
def test_a_swapped_shard_is_refused(shards, tmp_path):
    from data.manifest import load_manifest, shard_counts, shard_hashes, shard_paths

    other = write_tiny_shards(tmp_path / "other", episodes=4, length=16, obs_steps=2, horizon=8, images=False,
                              seed=7)
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    name = load_manifest(copy)["shards"][1]["name"]
    shutil.copy(other / name, copy / name)  # same name, same count, another dataset's bytes
    manifest = load_manifest(copy)
    paths = shard_paths(copy, manifest)
    # counts alone cannot tell
    assert len(list(tar_samples(paths, counts=shard_counts(copy, manifest)))) == 4 * 16
    with pytest.raises(ShardError, match=r"not the shard the manifest lists"):
        list(tar_samples(paths, counts=shard_counts(copy, manifest), hashes=shard_hashes(copy, manifest)))
    # training refuses it (the weighting statistics read every shard before the first step)
    with pytest.raises(ShardError, match=r"not the shard the manifest lists"):
        train(tiny_cfg(copy, tmp_path / "run", "act", "episode_quality", steps=2))
    # negative control: the untouched shards pass the same check
    original = load_manifest(shards)
    hashes = shard_hashes(shards, original)
    assert len(hashes) == 4
    assert len(list(tar_samples(shard_paths(shards, original), hashes=hashes))) == 64
    assert hashes == {}  # each verified once: a reader passing the same dict again does not hash them again


def test_the_loader_stream_checks_hashes(shards, tmp_path):
    from data.batches import ShardDataModule, WindowNeeds

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    other = write_tiny_shards(tmp_path / "other", episodes=4, length=16, obs_steps=2, horizon=8, images=False,
                              seed=7)
    for s in json.loads((copy / "manifest.json").read_text())["shards"]:
        shutil.copy(other / s["name"], copy / s["name"])
    needs = WindowNeeds(obs_steps=1, future_actions=8, features=("observation.state",))
    for verify, fails in ((True, True), (False, False)):  # the check off: the swap passes (what it guards)
        dm = ShardDataModule(copy, needs, batch_size=16, num_workers=0, shuffle_buffer=1, steps_per_epoch=8,
                             verify=verify)
        stream = iter(dm.stream())
        if fails:
            with pytest.raises(ShardError, match="not the shard the manifest lists"):
                for _ in range(8):
                    next(stream)
        else:
            assert len([next(stream) for _ in range(8)]) == 8


# ------------------------------------------------------------------ 8. an option that needs another
def test_control_column_without_the_static_control_is_refused(tmp_path):
    from pipeline.annotate.run import _check_config

    args = [f"dataset.root={tmp_path}", f"out={tmp_path / 'ann'}", "reward=column", "reward.control_column=c"]
    with pytest.raises(UserError, match=r"reward\.control_column=c .*control\.static=true"):
        _check_config(load_config("annotate", args))
    _check_config(load_config("annotate", [*args, "control.static=true"]))  # negative control


# ------------------------------------------------------------------ 9. the judge runs where something needs it
def test_every_trial_labelled_needs_no_judge(tmp_path, monkeypatch):
    import pipeline.rewards.registry as registry
    from policies.evaluation.recorded import evaluate_recordings
    from tests.test_recorded_eval import SUCCESS, _recording

    recs = {p: _recording(tmp_path / p, p) for p in SUCCESS}
    built = []
    real = registry.build_reward
    monkeypatch.setattr(registry, "build_reward", lambda *a, **k: built.append(a) or real(*a, **k))
    # the default judge (topreward) has no checkpoint here: building it would fail
    args = [f"recordings=[{recs['good']},{recs['weak']}]"]
    report = evaluate_recordings(load_config("evaluate", [*args, "partial_credit=null", f"out={tmp_path / 'col'}"]),
                                 progress=False)
    assert built == [] and report["policies"]["good"]["successes"] == 5  # the success column labels all
    labels = tmp_path / "labels.csv"
    labels.write_text("policy,episode_index,success\n" + "".join(
        f"{p},{e},{ok}\n" for p, v in SUCCESS.items() for e, ok in enumerate(v)))
    report = evaluate_recordings(load_config("evaluate", [*args, "success_column=null", f"labels={labels}",
                                                          "partial_credit=null", f"out={tmp_path / 'lab'}"]),
                                 progress=False)
    assert built == [] and report["policies"]["weak"]["successes"] == 1
    # partial credit (the default) would like the judge's curves: it is tried, and its absence is no failure
    report = evaluate_recordings(load_config("evaluate", [*args, f"out={tmp_path / 'pc'}"]), progress=False)
    assert len(built) == 1 and report["policies"]["good"]["successes"] == 5
    # negative control: an unlabelled trial needs the judge, and the missing checkpoint is reported
    labels.write_text("policy,episode_index,success\ngood,0,1\n")
    with pytest.raises(UserError, match="judge"):
        evaluate_recordings(load_config("evaluate", [*args, "success_column=null", f"labels={labels}",
                                                     f"out={tmp_path / 'some'}"]), progress=False)
    assert len(built) == 2


# ------------------------------------------------------------------ 10. one line, one process, no traceback
def test_a_full_disk_is_one_line_with_how_to_continue(capsys):
    from configs.commands import EXIT_ERROR, run_command

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoints/last.ckpt")

    assert run_command(full, [], interrupted="interrupted; to continue: python train.py resume=X") == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no space left" in err and "last.ckpt" in err and "python train.py resume=X" in err
    # negative control: any other OSError is a bug and keeps its traceback

    def other(argv):
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):
        run_command(other, [])


LOCK_HOLDER = """
import sys, time
from configs.outputs import lock_folder
lock_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_folder_is_written_by_one_process_at_a_time(tmp_path):
    out = tmp_path / "ann"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(out), "30"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"in use by another topbc process \(pid {holder.pid}\)"):
            claim_output(out, {"a": 1}, overwrite=False, kind="annotate", ours=())
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # negative control: once that process is gone the folder is claimed (the lock file is not "content")
    assert claim_output(out, {"a": 1}, overwrite=False, kind="annotate", ours=()) == "new"


def test_the_experiment_plot_takes_a_variant_with_no_success(tmp_path):
    from experiments.rabc import plot_success
    from policies.evaluation.stats import wilson_interval

    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 400))
    runs = [{"eval": {"episodes": 3, "successes": 0}}]
    per_task = {"push-v3": {"variants": {"none": {"runs": runs}, "expert_only": {"runs": [
        {"eval": {"episodes": 3, "successes": 3}}]}}}}
    path = tmp_path / "s.png"
    plot_success(per_task, path)
    assert path.stat().st_size > 1000


def test_an_unloadable_video_decoder_prints_no_traceback(monkeypatch, caplog):
    from lerobot.utils.import_utils import get_safe_default_video_backend

    from configs.commands import quiet_libraries

    logger = logging.getLogger("lerobot.utils.import_utils")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as where FFmpeg's libraries cannot be loaded
    with caplog.at_level(logging.WARNING):
        assert get_safe_default_video_backend() == "pyav"
    assert any("torchcodec" in r.getMessage() for r in caplog.records)  # what a user saw (negative control)
    caplog.clear()
    quiet_libraries()
    with caplog.at_level(logging.WARNING):
        assert get_safe_default_video_backend() == "pyav"
    assert not [r for r in caplog.records if r.name == logger.name]


WRITER = """
import sys
from data.success_labels import set_label
path, start = sys.argv[1], int(sys.argv[2])
for e in range(start, start + 150):
    set_label(path, "act", e, e % 2 == 0, f"note {e}")
"""


def test_two_writers_of_one_labels_file_lose_nothing(tmp_path):
    """Two processes (two review pages on one folder) write 150 labels each into one file at the same time: each
    read-change-write is locked, each write atomic through a temporary file of its own."""
    path = tmp_path / "labels.csv"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for start in (0, 1000)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    labels = read_labels(path)
    assert sorted(e for _, e in labels) == [*range(150), *range(1000, 1150)]
    assert labels[("act", 1001)].note == "note 1001" and labels[("act", 1002)].success is True


def test_a_full_disk_while_annotating_is_one_line_and_resumes(tmp_path, monkeypatch, capsys):
    """The shard writer fails with ENOSPC at the third episode: annotate exits 2 with one line saying what to do,
    and the same command afterwards finishes the annotation from what was kept."""
    from data import shards as shards_mod
    from pipeline.annotate.run import main
    from tests.fixtures.annotate import make_dataset_with_columns

    root = make_dataset_with_columns(tmp_path / "ds", lambda e, a: {}, episodes=4, length=8)
    out = tmp_path / "ann"
    args = [f"dataset.root={root}", f"out={out}", "reward=column", "reward.column=next.reward",
            "progress_bar=false", "plots=false", "window.horizon=4", "shards.max_count=8"]
    real = shards_mod.ShardWriter.write_episode
    calls = []

    def full(self, samples, summary):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.out / "shards" / ".r000-x.tar.tmp"))
        return real(self, samples, summary)

    monkeypatch.setattr(shards_mod.ShardWriter, "write_episode", full)
    capsys.readouterr()  # what making the dataset printed
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no space left on the device" in err and "re-run the same command" in err
    monkeypatch.setattr(shards_mod.ShardWriter, "write_episode", real)
    assert main(args) == 0
    from data.manifest import load_manifest

    assert sorted(e["episode_index"] for e in load_manifest(out)["episodes"]) == [0, 1, 2, 3]
