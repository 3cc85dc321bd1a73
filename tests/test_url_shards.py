"""Annotation outputs read by URL: an HTTP server on 127.0.0.1, ``pipe:`` commands and fsspec give what the local
folder gives (samples, batches, the progress table, the report); a damaged remote shard fails as a local one."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import torch

from configs import ConfigError
from data.batches import ShardDataModule, ShardError, WindowNeeds
from data.manifest import ManifestError, load_manifest, locate, shard_counts, shard_paths
from data.progress_table import fit_progress_table
from data.shards import tar_samples
from tests.fixtures.shards import CAMERA, STATE, write_tiny_shards

LENGTH = 12
NEEDS = WindowNeeds(obs_steps=2, future_actions=4, past_actions=1, features=(CAMERA, STATE))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder served over HTTP on 127.0.0.1 (a free port); yields (folder, base URL)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def local(served):
    root, _ = served
    return write_tiny_shards(root / "ann", episodes=4, length=LENGTH, obs_steps=3, horizon=8)


def _plain(samples):
    return [{k: v for k, v in s.items() if k != "__url__"} for s in samples]


def _batches(root, num_workers=0, steps=4):
    dm = ShardDataModule(root, NEEDS, batch_size=5, num_workers=num_workers, steps_per_epoch=steps,
                         shuffle_buffer=16, seed=3)
    return list(dm.train_dataloader())


def _assert_same_batches(a, b):
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, equal_nan=True)


def test_http_root_gives_the_local_samples_and_batches(local, served):
    _, base = served
    url = f"{base}/ann"
    assert load_manifest(url) == load_manifest(local) == load_manifest(f"{url}/manifest.json")
    urls = shard_paths(url)
    assert urls == [f"{url}/{s['name']}" for s in load_manifest(local)["shards"]] and len(urls) == 4
    remote = list(tar_samples(urls, counts=shard_counts(url, load_manifest(url))))
    ours = list(tar_samples(shard_paths(local)))
    assert len(ours) == 4 * LENGTH and _plain(remote) == _plain(ours)
    assert remote[0]["__url__"] == urls[0]
    # the batches, shuffled and decoded in a loader worker, are the local folder's values
    _assert_same_batches(_batches(url, num_workers=1), _batches(local))
    # negative control: another seed gives other batches
    other = ShardDataModule(url, NEEDS, batch_size=5, num_workers=0, steps_per_epoch=4, shuffle_buffer=16,
                            seed=4)
    assert not torch.equal(next(iter(other.train_dataloader()))["index"], _batches(local)[0]["index"])


def test_pipe_shards_give_the_local_samples(local):
    paths = shard_paths(local)
    piped = list(tar_samples([f"pipe:cat {p}" for p in paths]))
    assert _plain(piped) == _plain(tar_samples(paths)) and piped[0]["__url__"] == f"pipe:cat {paths[0]}"
    # a pipe: template reads the manifest and every shard through the command
    template = f"pipe:cat {local}/{{name}}"
    assert locate(template, "shards/x.tar") == f"pipe:cat {local}/shards/x.tar"
    assert load_manifest(template) == load_manifest(local)
    _assert_same_batches(_batches(template), _batches(local))


def test_pipe_and_url_errors_name_the_location_and_what_to_do(local, served, tmp_path):
    with pytest.raises(ManifestError, match=r"'pipe:cat /no/such/folder/manifest.json' exited with status 1: "
                                            r"cat: /no/such/folder/manifest.json: No such file"):
        load_manifest("pipe:cat /no/such/folder/{name}")
    with pytest.raises(ManifestError, match=r"pipe: command without \{name\}"):
        load_manifest(f"pipe:cat {local}/manifest.json")
    _, base = served
    with pytest.raises(ManifestError, match=rf"the manifest of {base}/nothing cannot be read: .*Error 404"):
        load_manifest(f"{base}/nothing")
    missing = f"{base}/ann/shards/r000-999999.tar"
    with pytest.raises(ShardError, match=rf"shard {missing} cannot be read \(.*HTTP Error 404"):
        list(tar_samples([missing]))
    with pytest.raises(ShardError, match=r"shard pipe:cat /no/such.tar cannot be read "
                                         r"\('pipe:cat /no/such.tar' exited with status 1"):
        list(tar_samples(["pipe:cat /no/such.tar"]))
    # a command that stops early is ended, and the next shard still reads
    stopped = tar_samples([f"pipe:cat {shard_paths(local)[0]}"])
    next(stopped)
    stopped.close()
    with pytest.raises(ConfigError, match=r"give out=DIR"):
        from pipeline.report import write_report

        write_report(f"{base}/ann")


def test_fsspec_url_gives_the_local_samples(local):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for path in [local / "manifest.json", *shard_paths(local)]:
        fs.pipe(f"/url_test/{path.relative_to(local).as_posix()}", path.read_bytes())
    try:
        url = "memory://url_test"
        assert load_manifest(url) == load_manifest(local)
        assert _plain(tar_samples(shard_paths(url))) == _plain(tar_samples(shard_paths(local)))
    finally:
        fs.rm("/url_test", recursive=True)


@pytest.mark.parametrize("cut", ["mid_member", "end_marker"])
def test_truncated_remote_shard_raises_the_local_error(local, served, cut):
    root, base = served
    bad = root / f"bad_{cut}"
    shutil.copytree(local, bad)
    shard = shard_paths(bad)[2]
    data = shard.read_bytes()
    if cut == "mid_member":
        data = data[: len(data) // 2 + 100]
    else:  # every member whole, only the end-of-archive blocks missing
        end = len(data.rstrip(b"\0"))
        data = data[: end + (-end) % 512]
    url = f"{base}/bad_{cut}"
    # negative control: the intact copy reads whole from every location, checked against the manifest's counts
    for where in (url, f"pipe:cat {bad}/{{name}}", bad):
        counts = shard_counts(where, load_manifest(where))
        assert len(list(tar_samples(shard_paths(where), counts=counts))) == 4 * LENGTH
    shard.write_bytes(data)
    errors = {}
    for where in (bad, url, f"pipe:cat {bad}/{{name}}"):
        name = str(shard_paths(where)[2])
        with pytest.raises(ShardError) as info:
            list(tar_samples(shard_paths(where), counts=shard_counts(where, load_manifest(where))))
        assert name in str(info.value)
        errors[name] = str(info.value).replace(name, "SHARD")
    local_text, http_text, pipe_text = errors.values()
    assert local_text == http_text == pipe_text
    assert local_text.startswith("shard SHARD is corrupt or truncated (EOFError: ")
    # the training loader stops on it the same way (20 batches of 5: every shard is read)
    with pytest.raises(ShardError, match=rf"shard {url}/shards/\S+ is corrupt or truncated"):
        _batches(url, steps=20)


def test_progress_table_and_report_from_a_url(local, served, tmp_path):
    _, base = served
    for where in (f"{base}/ann", f"pipe:cat {local}/{{name}}"):
        remote, ours = fit_progress_table(where, 4).as_arrays(), fit_progress_table(local, 4).as_arrays()
        assert ours.keys() == remote.keys() and len(ours["gain"]) == 4 * LENGTH
        for k in ours:
            np.testing.assert_array_equal(remote[k], ours[k])


@pytest.fixture(scope="module")
def annotated(served):
    from tests.fixtures.annotate import run_annotate
    from tests.fixtures.datasets import make_synthetic_dataset

    root, base = served
    ds = make_synthetic_dataset(root / "ds", episodes=3, length=[14, 10, 12], fps=4, image_size=(32, 32),
                                cameras=("top",), seed=2)
    run_annotate(ds, root / "col", "window.horizon=4", "plots=false")
    return root / "col", f"{base}/col"


def test_report_on_a_url_equals_the_local_report(annotated, tmp_path):
    from pipeline.report import main

    local, url = annotated
    assert main([str(local), "labels=none", f"out={tmp_path / 'local'}"]) == 0
    assert main([url, "labels=none", f"out={tmp_path / 'url'}"]) == 0
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("local", "url"))
    assert a.pop("annotation") == str(local) and b.pop("annotation") == url
    assert a == b and a["episodes"] == 3
    md = [(tmp_path / d / "report.md").read_text().split("\n", 1)[1] for d in ("local", "url")]
    assert md[0] == md[1]


def test_training_from_a_url_equals_training_from_the_folder(local, served, tmp_path):
    from policies.training import train
    from tests.fixtures.bc import tiny_cfg

    _, base = served
    runs = {}
    for name, shards in [("local", local), ("url", f"{base}/ann")]:
        cfg = tiny_cfg(shards, tmp_path / name, "act", "top_awr", "data.num_workers=0", "trainer.loggers=false",
                       "trainer.progress_bar=false", "export=false", steps=3)
        runs[name] = train(cfg)
    assert runs["url"].steps == runs["local"].steps == 3
    assert runs["url"].final_loss == runs["local"].final_loss
    a, b = (torch.load(runs[n].checkpoint, map_location="cpu", weights_only=False) for n in ("local", "url"))
    assert a["topbc"]["run"]["data.shards"] == str(local.resolve())
    assert b["topbc"]["run"]["data.shards"] == f"{base}/ann"
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)
