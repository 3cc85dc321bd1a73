"""Blind review: the review page without the policies' names, its trials shuffled across policies.

    python -m policies.review DIR blind=true [blind_seed=S]

A person who knows which policy a trial came from labels it with that in mind, however fair they mean to be.
In blind mode the page lists every trial of every policy as ``trial 0 .. N−1`` in an order shuffled with a seed
(``blind_seed``; when not given, the one ``DIR/blind_review.json`` recorded, else a fresh one, recorded
there), so trial numbers stay the same across restarts. What the page receives carries no policy name: each
trial's policy is :data:`BLIND_POLICY` and its episode index its trial number; videos and thumbnails are served
under ``blind/trial_NNNN.*``; the other files of ``DIR`` (``episodes.json``, the labels file, the report) are
not served, and "Re-make report" is refused, since each names the policies. A label the page sends for a
trial is written under the trial's real policy and episode index, so the labels file maps back to the
policies as in a plain review.

The server is :class:`policies.evaluation.review.ReviewServer` with :class:`BlindReviewHandler`, which
translates between trials and episodes around the plain handler's own parsing and checks.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from pathlib import Path

import numpy as np

from configs.outputs import atomic_write
from policies.evaluation.review import ReviewError, ReviewHandler

BLIND_POLICY = "blind"
BLIND_FILE = "blind_review.json"
# what a trial shows of its episode in blind mode; dataset paths, tasks and cameras may name the policy
SHOWN = ("label", "source", "note", "judge", "progress", "length", "fps")


def blind_seed(out_dir: str | Path, seed: int | None) -> int:
    """The shuffle's seed: ``seed`` if given, else the one ``DIR/blind_review.json`` recorded, else a fresh one;
    recorded in that file either way (the file is this module's own; anything else by that name is an error)."""
    path = Path(out_dir) / BLIND_FILE
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if not isinstance(old, dict) or "blind_seed" not in old:
            raise ReviewError(f"{path} is not a blind review's record; move it away to review blind")
    if seed is None:
        seed = int(old["blind_seed"]) if old else secrets.randbelow(2 ** 31)
    atomic_write(path, json.dumps({"blind_seed": int(seed)}, indent=1))
    return int(seed)


class BlindMap:
    """Trial number ↔ (policy, episode index) of one folder's episodes, shuffled by ``seed``."""

    def __init__(self, episodes: list[dict], seed: int):
        keys = sorted((e["policy"], e["episode_index"]) for e in episodes)
        order = np.random.default_rng(int(seed)).permutation(len(keys))
        self.seed = int(seed)
        self.keys = [keys[i] for i in order]
        self.trial = {k: t for t, k in enumerate(self.keys)}
        self.files: dict[str, str] = {}

    def unblind(self, policy, episode) -> tuple[str, int] | None:
        if policy == BLIND_POLICY and isinstance(episode, int) and not isinstance(episode, bool) \
                and 0 <= episode < len(self.keys):
            return self.keys[episode]
        return None

    def episode(self, ep: dict) -> dict:
        """``ep`` as the page may see it: its trial number, the fields of :data:`SHOWN`, and blind file names."""
        t = self.trial[(ep["policy"], ep["episode_index"])]
        out = {"policy": BLIND_POLICY, "episode_index": t} | {k: ep[k] for k in SHOWN if k in ep}
        for field in ("video", "thumbnails"):
            if ep.get(field):
                name = f"blind/trial_{t:04d}{Path(str(ep[field])).suffix}"
                self.files[name] = str(ep[field])
                out[field] = name
        return out

    def page_data(self, data: dict) -> dict:
        """``GET /api/episodes``'s answer, blinded."""
        return {"dir": data["dir"], "labels_file": data["labels_file"],
                "blind": {"seed": self.seed, "trials": len(self.keys)},
                "episodes": [self.episode(e) for e in data["episodes"]]}


class BlindReviewHandler(ReviewHandler):
    """The plain handler, with trials translated to episodes on the way in and back on the way out."""

    def read_json(self):
        body = super().read_json()
        if isinstance(body, dict):
            real = self.server.blind.unblind(body.get("policy"), body.get("episode_index"))
            if real is not None:
                body = body | {"policy": real[0], "episode_index": real[1]}
        return body

    def send_json(self, status: int, body) -> None:
        if isinstance(body, dict) and isinstance(body.get("episode"), dict) and "policy" in body["episode"]:
            body = body | {"episode": self.server.blind.episode(body["episode"])}
        super().send_json(status, body)

    def send_file(self, quoted: str) -> None:
        name = urllib.parse.unquote(quoted)
        real = self.server.blind.files.get(name)
        if real is None:
            self.send_error_json(403, f"{name}: a blind review serves only its trials' videos and thumbnails")
            return
        super().send_file(urllib.parse.quote(real))

    def post_report(self) -> None:
        self.send_error_json(403, "a blind review does not re-make the report (it names the policies); make it "
                                  "after labelling: python -m policies.evaluate recordings=[...] out=DIR")
