"""The corpus review: label a corpus's demonstrations good or bad, most worth labelling first.

    python -m policies.review ANNOTATION_DIR weighting=NAME [weighting.key=value ...] [policy=act] [labels=FILE]
        [order=heaviest|uncertain|mix|spread] [camera=NAME] [next=N]

``ANNOTATION_DIR`` is the output of ``python -m pipeline.annotate ... out=DIR`` (its ``manifest.json``). A rule
of ``train.py`` weighs its episodes; a few of them carry most of the weight, and a person who marks those good
(worth copying) or bad (a failure, or a success reached by wandering, stalling or going to the wrong goal first)
tells training what the rule cannot: ``train.py ... labels=FILE`` weighs the bad ones 0 and calibrates the rest
(:mod:`policies.weighting.calibrated`).

The weights are training's own (:func:`policies.training.episode_weights` on the train config composed with
``data.shards=DIR`` and the ``weighting``/``policy``/``calibrate``/``labels_only``/``debug`` keys given here; the policy is built
on the CPU with random backbone weights, so nothing is downloaded). The page lists the demonstrations not yet
labelled in the order :func:`policies.weighting.calibrated.acquisition_order` gives (recomputed after each label),
then the labelled ones, heaviest first; per demonstration its video (every camera of the source dataset, or
``camera=``; each clip decoded once from the source dataset with :mod:`data.source` and kept in
``DIR/review/videos/``), its raw-score curve with the static-video control where the annotation has one, its
weight under the rule, its rank, its share of all the weight and its weight as training would weigh it.

Labels go at once to the labels file (``labels=``; default ``DIR/labels.csv``) through
:func:`data.success_labels.set_label`, in its ``good`` column, policy ``""`` (a file about one dataset's
episodes, what ``train.py labels=`` reads). A file that labels another policy's episodes, or is no labels file,
is refused before anything is written. ``next=N`` prints the next N episodes to label, one index a line, and
serves nothing.

The server is :class:`policies.evaluation.review.ReviewServer` with :class:`CorpusHandler`, which keeps the
plain handler's checks (Host, JSON writes from the page's own origin, bounded bodies) and answers a label with
``{"episode_index", "good": true|false|null, "note"?}``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

from configs import UserError, load_config
from data.manifest import MANIFEST, PLOTS_DIR, load_manifest
from data.source import SourceError, open_dataset
from data.success_labels import LabelsError, episode_judgements, read_labels, set_label
from pipeline.plots import episode_png_name
from policies.evaluation.review import (
    BadRequest,
    ReviewError,
    ReviewHandler,
    ReviewServer,
    listen,
    serve_until_stopped,
)
from policies.evaluation.video import write_video
from policies.weighting.calibrated import ORDERS, acquisition_order

# the train config's keys a corpus review passes on (weighting=NAME, weighting.beta=0.5, policy=act, debug=...)
TRAIN_KEYS = ("weighting", "policy", "calibrate", "labels_only", "debug")
LABELS_FILE = "labels.csv"
VIDEOS_DIR = "review/videos"  # the clips made from the source dataset, inside the annotation folder
POLICY = ""  # a labels file about one dataset's episodes names no policy (what train.py labels= reads)


class CorpusError(ReviewError):
    """The corpus cannot be reviewed as asked; the message names the value and what to do."""


def is_corpus(folder: str | Path) -> bool:
    """Whether ``folder`` is an annotation output (it holds ``manifest.json``)."""
    return (Path(folder) / MANIFEST).is_file()


def is_train_key(key: str) -> bool:
    """Whether an override ``key=value`` belongs to the train config (:data:`TRAIN_KEYS` and keys under them)."""
    return key.split(".", 1)[0] in TRAIN_KEYS


def train_config(ann_dir: str | Path, overrides: list[str], labels: str | Path | None, out: str | Path):
    """The train config whose weights the page shows: ``data.shards=ann_dir``, the user's ``overrides``, on the
    CPU, and a policy that downloads nothing (its weights play no part in the episodes' weights)."""
    cfg = load_config("train", [f"data.shards={ann_dir}", f"out={out}", "trainer.accelerator=cpu", *overrides])
    if "pretrained_backbone_weights" in cfg.policy:
        cfg.policy.pretrained_backbone_weights = None
    cfg.labels = None if labels is None else str(labels)
    if labels is None:  # labels_only before any label (or with none good): the rule's weights still order
        cfg.labels_only = False
    return cfg


def clip_name(episode: int, camera: str) -> str:
    """The clip of one episode's camera, relative to the annotation folder."""
    short = re.sub(r"[^A-Za-z0-9_-]+", "_", camera.removeprefix("observation.images.")) or "camera"
    return f"{VIDEOS_DIR}/episode_{episode:06d}.{short}.mp4"


class Corpus:
    """One annotation folder under review: its episodes, their weights, the labels file and the source videos."""

    def __init__(self, ann_dir: str | Path, overrides: list[str] | None = None, labels: str | Path | None = None,
                 order: str = "heaviest", camera: str | None = None):
        self.dir = Path(ann_dir)
        if not is_corpus(self.dir):
            raise CorpusError(f"{self.dir} has no {MANIFEST}; give the output folder of `python -m "
                              "pipeline.annotate ... out=DIR`")
        if order not in ORDERS:
            raise CorpusError(f"order={order!r}: choose one of {', '.join(ORDERS)}")
        bad = [o for o in overrides or [] if not is_train_key(o.split("=", 1)[0])]
        if bad:
            raise CorpusError(f"{bad[0]!r} is not a key a corpus review passes to the train config; give "
                              f"{', '.join(k + '=' for k in TRAIN_KEYS)} or their keys (weighting.beta=0.5)")
        self.overrides = list(overrides or [])
        self.order_name = order
        self.camera = camera or None
        self.manifest = load_manifest(self.dir)
        self.episodes: list[dict] = list(self.manifest.get("episodes") or [])
        if not self.episodes:
            raise CorpusError(f"{self.dir / MANIFEST} lists no episodes; annotate some first")
        self.known = {int(e["episode_index"]) for e in self.episodes}
        self.labels = Path(labels) if labels else self.dir / LABELS_FILE
        self.lock = threading.Lock()  # weights and the source: one request at a time computes them
        self.clip_lock = threading.Lock()  # one clip decoded and encoded at a time
        self.judgements()  # a labels file that is not ours is refused now, before anything is written
        self.weighting = None
        self.rule: dict[int, float] = {}
        self.training: dict[int, float] | None = None
        self.notes: list[str] = []
        self._weights_of = None
        self.refresh_weights()
        self._source = None
        self.clips: dict[str, tuple[int, str]] = {}

    # ---- labels ------------------------------------------------------------------------------------------
    def judgements(self) -> dict[int, bool]:
        """Episode → good of the labels file, as training reads it; a file about other episodes is refused."""
        rows = read_labels(self.labels, need="any")
        others = sorted({p for p, _ in rows if p != POLICY})
        if others:
            raise LabelsError(f"labels file {self.labels} labels episodes of policies {others}, not this dataset's "
                              "demonstrations; give another file with labels=FILE (nothing was written)")
        unknown = sorted({e for _, e in rows} - self.known)
        if unknown:
            raise LabelsError(f"labels file {self.labels} labels episodes {unknown[:10]} that {self.dir} does not "
                              "hold; give the labels file of this annotation with labels=FILE")
        return episode_judgements(self.labels)

    def notes_of(self) -> dict[int, str]:
        return {e: lab.note for (_, e), lab in read_labels(self.labels, need="any").items()}

    def set_label(self, episode: int, good: bool | None, note: str | None) -> dict[int, bool]:
        """Write one episode's judgement (None: clear it) to the labels file; the file's judgements after."""
        if episode not in self.known:
            raise BadRequest(400, f"episode {episode} is not in {self.dir / MANIFEST}; nothing was written")
        set_label(self.labels, POLICY, episode, good=good, note=note)
        return self.judgements()

    # ---- weights and order -------------------------------------------------------------------------------
    def _signature(self):
        try:
            st = self.labels.stat()
            return st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    def refresh_weights(self) -> None:
        """(Re)compute the weights where the labels file changed since: the rule's alone (the order's
        heaviness) and training's (labels and calibration applied)."""
        sig = self._signature()
        if self._weights_of == (sig,) and self.rule:
            return
        from policies.training import episode_weights  # torch and the policy: only where weights are computed

        labels = self.labels if self.judgements() else None
        with tempfile.TemporaryDirectory(prefix="topbc-review-") as tmp:
            try:
                cfg = train_config(self.dir, self.overrides, labels, Path(tmp) / "run")
                rule, training, module = episode_weights(cfg)
                notes = list(getattr(module, "weight_notes", []) or [])
            except UserError as exc:
                if labels is None:
                    raise CorpusError(str(exc)) from exc  # the handler answers it with its reason
                # the labels leave training nothing to weigh (every episode bad, or none good with labels_only):
                # the rule's weights still order
                cfg = train_config(self.dir, self.overrides, None, Path(tmp) / "run")
                rule, _, _ = episode_weights(cfg)
                training, notes = None, [f"training weights: {exc}"]
        self.weighting = str(cfg.weighting.name)
        self.rule, self.training, self.notes = rule, training, notes
        self._weights_of = (sig,)

    def order(self, judgements: dict[int, bool] | None = None) -> list[int]:
        """The unlabelled episodes, most worth labelling first (:func:`acquisition_order`)."""
        judgements = self.judgements() if judgements is None else judgements
        return acquisition_order(self.order_name, self.rule, judgements, self.episodes)

    def ranks(self) -> dict[int, int]:
        """Episode → its rank under the rule alone (1: the heaviest; ties: the lower index first)."""
        return {e: i + 1 for i, e in enumerate(sorted(self.rule, key=lambda e: (-self.rule[e], e)))}

    # ---- videos ------------------------------------------------------------------------------------------
    def source(self):
        """(the opened source dataset or None, its cameras shown, one line saying why there is no video)."""
        if self._source is None:
            self._source = self._open_source()
        return self._source

    def _open_source(self):
        src_info = self.manifest.get("source") or {}
        root = src_info.get("root")
        if not root or not Path(root).is_dir():
            return None, [], (f"no video: the source dataset {root or src_info.get('repo_id') or '(not named)'} "
                              f"is not on this machine ({MANIFEST}'s source.root)")
        try:
            src = open_dataset(root, src_info.get("repo_id"))
            episodes = {ep.index: ep for ep in src.episodes()}
        except SourceError as exc:
            return None, [], f"no video: {exc}"
        try:
            cameras = [src.camera(self.camera)] if self.camera else list(src.camera_keys)
        except SourceError as exc:
            raise CorpusError(f"camera={self.camera}: {exc}") from None
        if not cameras:
            return None, [], f"no video: the source dataset {root} has no camera"
        return (src, episodes), cameras, None

    def videos(self, episode: dict) -> tuple[list[dict], str | None]:
        """The clips of one manifest episode ({camera, file}), or none and why."""
        opened, cameras, why = self.source()
        if opened is None:
            return [], why
        _, source_episodes = opened
        index, length = int(episode["episode_index"]), int(episode.get("length") or 0)
        ep = source_episodes.get(index)
        if ep is None or (length and ep.length != length):
            return [], (f"no video: episode {index} of the source dataset "
                        f"{'is missing' if ep is None else f'has {ep.length} frames, not {length}'}: "
                        "the source changed since the annotation")
        out = []
        for cam in cameras:
            name = clip_name(index, cam)
            self.clips[name] = (index, cam)
            out.append({"camera": cam, "file": name})
        return out, None

    def ensure_clip(self, rel: str) -> None:
        """Make the clip ``rel`` names from the source dataset if it is one of ours and not made yet."""
        if rel not in self.clips:
            return
        path = self.dir / rel
        with self.clip_lock:
            if path.is_file():
                return
            (src, episodes), _, _ = self.source()
            index, cam = self.clips[rel]
            frames = src.decode_frames(episodes[index], cam)
            part = path.with_name(f".{path.stem}.{os.getpid()}.part.mp4")
            try:
                write_video(list(frames), part, fps=max(1, round(src.fps)))
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)

    # ---- what the page shows ------------------------------------------------------------------------------
    def page_data(self) -> dict:
        """``GET /api/episodes``'s answer: the labelled ones after the order's, heaviest first."""
        with self.lock:
            self.refresh_weights()
            judgements = self.judgements()
            notes = self.notes_of()
            order = self.order(judgements)
            position = {e: i for i, e in enumerate(order)}
            ranks = self.ranks()
            total = sum(self.rule.values()) or 1.0
            fps = self.manifest.get("source", {}).get("fps")
            episodes = []
            for e in self.episodes:
                index = int(e["episode_index"])
                videos, why = self.videos(e)
                plot = Path(PLOTS_DIR) / episode_png_name(index)
                label = judgements.get(index)
                episodes.append({
                    "policy": POLICY, "episode_index": index, "task": e.get("task"), "length": e.get("length"),
                    "fps": fps, "videos": videos, "video_note": why,
                    "curve": {"prefix_ends": e.get("prefix_ends") or [], "raw": e.get("raw_scores") or [],
                              "control": e.get("control_raw_scores")},
                    "plot": str(plot) if (self.dir / plot).is_file() else None,
                    "weight": self.rule.get(index), "rank": ranks.get(index), "share": self.rule.get(index, 0) / total,
                    "trained": None if self.training is None else self.training.get(index),
                    "label": label, "source": "human" if label is not None else "none",
                    "note": notes.get(index, "") if label is not None else "",
                    "next": position.get(index)})
        episodes.sort(key=lambda ep: (ep["next"] is None, position.get(ep["episode_index"], 0),
                                      ep["rank"] or len(episodes) + 1, ep["episode_index"]))
        return {"dir": str(self.dir), "labels_file": str(self.labels), "episodes": episodes,
                "corpus": {"weighting": self.weighting, "order": self.order_name, "next": order,
                           "notes": self.notes, "episodes": len(episodes)}}


class CorpusServer(ReviewServer):
    """The review server of one corpus (:class:`Corpus`)."""

    def __init__(self, address: tuple[str, int], corpus: Corpus, handler=None):
        self.corpus = corpus
        super().__init__(address, corpus.dir, corpus.labels, handler=handler or CorpusHandler)

    def episodes(self) -> dict:
        return self.corpus.page_data()


class CorpusHandler(ReviewHandler):
    """The plain handler with a demonstration's label (good/bad) and its clips made on first request."""

    server: CorpusServer

    def send_file(self, quoted: str) -> None:
        try:
            self.server.corpus.ensure_clip(urllib.parse.unquote(quoted))
        except (SourceError, OSError) as exc:
            self.send_error_json(500, f"the clip {urllib.parse.unquote(quoted)} cannot be made: {exc}")
            return
        super().send_file(quoted)

    def post_label(self) -> None:
        body = self.read_json()
        episode, good, note = body.get("episode_index"), body.get("good"), body.get("note")
        if not isinstance(episode, int) or isinstance(episode, bool):
            self.send_error_json(400, f"episode_index={episode!r}: give an integer episode index")
            return
        fields = self.label_fields(body, "good")
        if fields is None:
            return
        good, note = fields
        with self.server.lock:
            try:
                judgements = self.server.corpus.set_label(episode, good, note)
            except BadRequest as exc:
                self.send_error_json(exc.status, str(exc))
                return
        self.send_json(200, {"episode": {"policy": POLICY, "episode_index": episode,
                                         "label": judgements.get(episode),
                                         "source": "human" if episode in judgements else "none",
                                         "note": self.server.corpus.notes_of().get(episode, "")},
                             "labels_file": str(self.server.labels)})

    def post_report(self) -> None:
        self.send_error_json(403, "a corpus review has no report; train with the labels: python train.py "
                                  f"data.shards={self.server.corpus.dir} labels={self.server.labels} ...")


def make_corpus_server(corpus: Corpus, host: str = "127.0.0.1", port: int = 8765) -> CorpusServer:
    """The server of ``corpus`` (not yet serving: call ``serve_forever``); ``port=0`` picks a free port."""
    return listen(CorpusServer, host, port, corpus)


def serve_corpus(corpus: Corpus, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False) -> int:
    """Serve the corpus page until Ctrl-C."""
    server = make_corpus_server(corpus, host, port)
    _, cameras, why = corpus.source()
    print(f"reviewing {len(corpus.episodes)} demonstrations of {server.root} weighed by weighting="
          f"{corpus.weighting} (order={corpus.order_name}); labels in {server.labels}")
    if why:
        print(why, file=sys.stderr)
    return serve_until_stopped(server, host, open_browser)


def next_to_label(corpus: Corpus, n: int) -> list[int]:
    """The next ``n`` episodes worth labelling (``next=N``)."""
    if int(n) < 1:
        raise CorpusError(f"next={n}: give a number of episodes of at least 1")
    return corpus.order()[: int(n)]
