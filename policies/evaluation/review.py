"""A local page where a person labels recorded rollouts: ``python -m policies.review DIR``.

``DIR`` is an evaluation folder of recorded rollouts (``python -m policies.evaluate recordings=[...] out=DIR``):
``DIR/episodes.json`` lists the episodes (policy, episode index, video, per-frame progress, the judge's call
and a snapshot of the label), and a labels file (:mod:`data.success_labels`) holds the human labels.
The labels file is the truth for human labels: every answer merges its current rows over the snapshot.

The server (stdlib ``ThreadingHTTPServer``, 127.0.0.1 by default) answers:

- ``GET /``: the page (``review_page.html`` beside this module; no external resources);
- ``GET /api/episodes``: ``{"dir", "labels_file", "episodes": [...]}`` with the file's labels merged in;
- ``GET /files/<path>``: a file under ``DIR`` (never outside it: ``..``, absolute paths and links out of
  ``DIR`` are refused), with ``Range`` requests answered 206 so a video can be seeked;
- ``POST /api/label`` ``{"policy", "episode_index", "success": true|false|null, "note"?}``: sets (null:
  clears) that episode's label in the file, atomically; an episode ``episodes.json`` does not list is refused;
- ``POST /api/report``: re-makes the evaluation report from the labels (``recorded.remake_report``) and
  returns its per-policy success rates.

It answers its own page only. Every request must name this server in ``Host`` (an IP address, ``localhost``, or
this machine's name where it listens on every address; another name is a DNS-rebinding page and gets 421); a
write must be ``Content-Type: application/json`` (no HTML form or ``no-cors`` fetch can send that) and, when a
browser sends ``Origin`` or ``Sec-Fetch-Site``, come from this page's own origin (else 403). A body must state
its length, at most :data:`MAX_BODY` bytes (else 411/413), and be a UTF-8 JSON object (else 400 with the reason).
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import re
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from configs import UserError
from data.success_labels import LabelsError, check_note, read_labels, set_label
from policies.evaluation.judging import SOURCES as LABEL_SOURCES
from policies.evaluation.judging import UNLABELLED
from policies.evaluation.recorded import EPISODES_FILE, labels_file, remake_report

PAGE = Path(__file__).with_name("review_page.html")
SOURCES = (*LABEL_SOURCES, UNLABELLED)
SUMMARY_KEYS = ("successes", "episodes", "success_rate", "ci_low", "ci_high", "unlabelled")
CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".png": "image/png", ".gif": "image/gif",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
                 ".json": "application/json", ".csv": "text/csv; charset=utf-8",
                 ".md": "text/markdown; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                 ".html": "text/html; charset=utf-8"}
CHUNK = 1 << 16
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_BODY = 64 * 1024  # bytes of one request body: a label and a note of MAX_NOTE characters fit many times
SAME_SITE = ("same-origin", "none")  # Sec-Fetch-Site of a request made by this page, or typed by the user


class BadRequest(Exception):
    """A request this server does not take; ``status`` and the reason go back as JSON."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class ReviewError(UserError, ValueError):
    """The folder cannot be reviewed (no or malformed ``episodes.json``, a busy port); the message says what
    to do."""


def load_episodes(out_dir: str | Path) -> dict:
    """``DIR/episodes.json``, checked: every episode names its policy and an integer episode index, once."""
    out_dir = Path(out_dir)
    path = out_dir / EPISODES_FILE
    if not out_dir.is_dir():
        raise ReviewError(f"{out_dir} is not a folder; give the output folder of "
                          "`python -m policies.evaluate recordings=[...] out=DIR`")
    if not path.is_file():
        raise ReviewError(f"{out_dir} has no {EPISODES_FILE}; run `python -m policies.evaluate "
                          f"recordings=[...] out={out_dir}` first and review that folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReviewError(f"{path} is not valid JSON ({exc}); re-run the evaluation that wrote it") from exc
    episodes = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(episodes, list):
        raise ReviewError(f"{path} has no `episodes` list; re-run the evaluation that wrote it")
    seen = set()
    for i, ep in enumerate(episodes):
        ok = (isinstance(ep, dict) and isinstance(ep.get("policy"), str) and ep["policy"]
              and isinstance(ep.get("episode_index"), int) and not isinstance(ep["episode_index"], bool))
        if not ok:
            raise ReviewError(f"{path}, episode entry {i}: needs a `policy` name and an integer `episode_index`")
        key = (ep["policy"], ep["episode_index"])
        if key in seen:
            raise ReviewError(f"{path}: episode {key[1]} of policy {key[0]!r} is listed twice")
        seen.add(key)
    return data


def labels_path(out_dir: str | Path, data: dict, labels: str | Path | None = None) -> Path:
    """The labels file (:func:`policies.evaluation.recorded.labels_file`: ``labels`` if given, else
    ``episodes.json``'s ``labels_file``, relative to ``DIR``, else ``DIR/labels.csv``)."""
    return labels_file(out_dir, data, labels)


def merge_labels(episodes: list[dict], labels: dict) -> list[dict]:
    """The episodes with the labels file's labels over the snapshot's: a labelled episode is the file's
    (source ``human``, with its note); a snapshot ``human`` label the file no longer has was cleared."""
    out = []
    for ep in episodes:
        ep = dict(ep)
        lab = labels.get((ep["policy"], ep["episode_index"]))
        if lab is not None and lab.success is not None:
            ep.update(label=lab.success, source="human", note=lab.note)
        elif ep.get("source") == "human" or ep.get("label") is None:
            ep.update(label=None, source="none", note="")
        else:  # a label from the dataset's column or the judge, as the evaluation found it
            ep["note"] = ""
        out.append(ep)
    return out


class ReviewServer(ThreadingHTTPServer):
    """The server of one evaluation folder; label writes (and the report) run one at a time."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], out_dir: Path, labels: Path, blind=None, handler=None):
        self.out_dir = out_dir
        self.root = out_dir.resolve()
        self.labels = labels
        self.lock = threading.Lock()
        self.blind = blind  # a policies.evaluation.blind.BlindMap in blind review (with its handler), else None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler or ReviewHandler)

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Host`` names this server: an IP address or ``localhost`` with our port, or
        this machine's own name when listening on every address. Any other name is a page whose DNS name was
        pointed at this machine (DNS rebinding), not a person who opened our address."""
        if not header:
            return False
        parsed = urllib.parse.urlsplit("//" + header.strip())
        try:
            port = parsed.port
        except ValueError:
            return False
        name = (parsed.hostname or "").rstrip(".").lower()
        if (port or 80) != self.server_address[1]:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        if name == "localhost":
            return True
        wildcard = self.server_address[0] in ("0.0.0.0", "::", "")
        return wildcard and name in {socket.gethostname().lower(), socket.getfqdn().lower()}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def episodes(self) -> dict:
        data = load_episodes(self.out_dir)
        out = {"dir": str(self.out_dir), "labels_file": str(self.labels),
               "episodes": merge_labels(data["episodes"], read_labels(self.labels))}
        return out if self.blind is None else self.blind.page_data(out)


class ReviewHandler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "topbc-review"

    # -- answers --------------------------------------------------------------------------------------------
    def send_json(self, status: int, body) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})

    def log_request(self, code="-", size="-"):
        if isinstance(code, HTTPStatus):
            code = code.value
        if str(code).isdigit() and int(code) >= 400:  # successful requests (a video's many ranges) are noise
            super().log_request(code, size)

    # -- GET ------------------------------------------------------------------------------------------------
    def do_HEAD(self):
        self.do_GET()

    def foreign_host(self) -> bool:
        """Answer 421 (and True) when ``Host`` does not name this server."""
        if self.server.host_allowed(self.headers.get("Host")):
            return False
        self.send_error_json(421, f"Host {self.headers.get('Host')!r} is not this server; open {self.server.url}")
        return True

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if self.foreign_host():
            return
        try:
            if path in ("/", "/index.html"):
                self.send_page()
            elif path == "/api/episodes":
                self.send_json(200, self.server.episodes())
            elif path.startswith("/files/"):
                self.send_file(path[len("/files/"):])
            else:
                self.send_error_json(404, f"no such page {path}; the page is at /")
        except (ReviewError, LabelsError) as exc:
            self.send_error_json(500, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser dropped the request (a video seeking elsewhere)

    def send_page(self) -> None:
        data = PAGE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def resolve_file(self, quoted: str) -> Path | None:
        """The file a ``/files/`` path names under the folder, or None after an error answer."""
        rel = urllib.parse.unquote(quoted)
        parts = rel.replace("\\", "/").split("/")
        if not rel or "\0" in rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
            self.send_error_json(403, f"{rel!r}: only relative paths inside the evaluation folder are served")
            return None
        target = self.server.out_dir / rel
        try:
            real = target.resolve(strict=True)
        except (FileNotFoundError, RuntimeError, OSError):
            self.send_error_json(404, f"no file {rel} in {self.server.root}")
            return None
        if not real.is_relative_to(self.server.root):
            self.send_error_json(403, f"{rel} leads outside the evaluation folder")
            return None
        if not real.is_file():
            self.send_error_json(404, f"{rel} is not a file in {self.server.root}")
            return None
        return real

    def send_file(self, quoted: str) -> None:
        path = self.resolve_file(quoted)
        if path is None:
            return
        size = path.stat().st_size
        ctype = CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] \
            or "application/octet-stream"
        start, end, status = 0, size - 1, 200
        header = self.headers.get("Range")
        if header:
            span = parse_range(header, size)
            if span is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if span != ():
                (start, end), status = span, 206
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        self.send_header("Cache-Control", "no-cache")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # -- POST -----------------------------------------------------------------------------------------------
    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if self.foreign_host():
            return
        try:
            self.check_origin()
            if path == "/api/label":
                self.post_label()
            elif path == "/api/report":
                self.read_json()
                self.post_report()
            else:
                self.send_error_json(404, f"no such action {path}")
        except BadRequest as exc:
            self.close_connection = True  # the body may be unread: the connection cannot carry another request
            self.send_error_json(exc.status, str(exc))
        except (ReviewError, LabelsError) as exc:
            self.send_error_json(500, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def check_origin(self) -> None:
        """A write comes from this page: JSON (which no form or ``no-cors`` request can send) and, where the
        browser says where it comes from, from our own origin."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest(415, f"Content-Type {ctype or 'none'!r}: send application/json")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            raise BadRequest(403, f"a request from {origin!r} may not change this page's labels")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in SAME_SITE:
            raise BadRequest(403, f"a {site} request may not change this page's labels")

    def read_json(self) -> dict:
        """The request's body: a JSON object of at most :data:`MAX_BODY` bytes (else :class:`BadRequest`)."""
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest(411, "send the body with a Content-Length, not chunked")
        text = self.headers.get("Content-Length")
        if text is None:
            raise BadRequest(411, "send a Content-Length")
        try:
            length = int(text)
        except ValueError:
            raise BadRequest(400, f"Content-Length {text!r} is not a number of bytes") from None
        if length < 0:
            raise BadRequest(400, f"Content-Length {length} is negative")
        if length > MAX_BODY:
            raise BadRequest(413, f"a body of {length} bytes is more than {MAX_BODY}; a label is a few hundred")
        raw = self.rfile.read(length) if length else b""
        if len(raw) < length:
            raise BadRequest(400, f"the body ended after {len(raw)} of {length} bytes")
        try:
            body = json.loads(raw.decode("utf-8") or "{}")
        except UnicodeDecodeError:
            raise BadRequest(400, "the body is not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise BadRequest(400, f"the body is not JSON ({type(exc).__name__})") from None
        if not isinstance(body, dict):
            raise BadRequest(400, 'send a JSON object {"policy", "episode_index", "success", "note"?}')
        return body

    def label_fields(self, body: dict, key: str) -> tuple[bool | None, str | None] | None:
        """(the label ``key`` of a POST body, its note), checked; None after a 400 answer."""
        value, note = body.get(key), body.get("note")
        if value not in (True, False, None) or (note is not None and not isinstance(note, str)):
            self.send_error_json(400, f"{key}={value!r}: give true, false or null (clear); note is text")
            return None
        try:
            return value, (None if note is None else check_note(note.strip()))
        except LabelsError as exc:
            self.send_error_json(400, str(exc))
            return None

    def post_label(self) -> None:
        body = self.read_json()
        policy, episode, success, note = (body.get("policy"), body.get("episode_index"), body.get("success"),
                                          body.get("note"))
        if not isinstance(policy, str) or not isinstance(episode, int) or isinstance(episode, bool):
            self.send_error_json(400, f"policy={policy!r}, episode_index={episode!r}: give a policy name and "
                                      "an integer episode index")
            return
        fields = self.label_fields(body, "success")
        if fields is None:
            return
        success, note = fields
        with self.server.lock:
            data = load_episodes(self.server.out_dir)
            known = {(e["policy"], e["episode_index"]) for e in data["episodes"]}
            if (policy, episode) not in known:
                self.send_error_json(400, f"unknown episode: episode {episode} of policy {policy!r} is not in "
                                          f"{self.server.root / EPISODES_FILE}; nothing was written")
                return
            labels = set_label(self.server.labels, policy, episode, success, note)  # None keeps the file's note
        ep = next(e for e in merge_labels(data["episodes"], labels)
                  if (e["policy"], e["episode_index"]) == (policy, episode))
        self.send_json(200, {"episode": ep, "labels_file": str(self.server.labels)})

    def post_report(self) -> None:
        with self.server.lock:
            try:
                report = remake_report(self.server.out_dir, labels=self.server.labels, progress=False)
            except (ValueError, OSError) as exc:  # LabelsError is a ValueError
                self.send_error_json(500, f"the report could not be re-made: {exc}")
                return
        self.send_json(200, report_summary(report))


def parse_range(header: str, size: int):
    """``(start, end)`` (inclusive) of a single ``bytes=`` range; ``()`` to answer the whole file (a form this
    server does not split, such as several ranges); None when it cannot be satisfied."""
    m = RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return ()
    first, last = m.group(1), m.group(2)
    if not first:  # the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def report_summary(report: dict) -> dict:
    """What the page shows of a re-made report: per policy the success counts, rate and interval, and the
    report's other plain values (such as where it was written)."""
    policies = report.get("policies") or {}
    out = {k: v for k, v in report.items() if isinstance(v, str | int | float | bool) or v is None}
    out["policies"] = {name: {k: p.get(k) for k in SUMMARY_KEYS if k in p}
                       for name, p in policies.items() if isinstance(p, dict)}
    return out


def make_server(out_dir: str | Path, labels: str | Path | None = None, host: str = "127.0.0.1",
                port: int = 8765, blind=None, handler=None) -> ReviewServer:
    """The server of ``out_dir`` (not yet serving: call ``serve_forever``); ``port=0`` picks a free port; ``blind``
    and ``handler``: blind review (:mod:`policies.evaluation.blind`).
    Raises :class:`ReviewError` for a folder without ``episodes.json`` or a busy port, and
    :class:`~data.success_labels.LabelsError` for a labels file that cannot be read."""
    out_dir = Path(out_dir)
    data = load_episodes(out_dir)
    path = labels_path(out_dir, data, labels)
    read_labels(path)  # a malformed labels file is an error now, not on the first click
    return listen(ReviewServer, host, port, out_dir, path, blind=blind, handler=handler)


def listen(server_class, host: str, port: int, *args, **kwargs) -> ReviewServer:
    """``server_class((host, port), *args, **kwargs)`` (a :class:`ReviewServer`), or :class:`ReviewError`
    saying what to do when the address cannot be listened on."""
    if not PAGE.is_file():
        raise ReviewError(f"the page {PAGE} is missing from this installation; reinstall topbc")
    try:
        return server_class((host, int(port)), *args, **kwargs)
    except OSError as exc:
        raise ReviewError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another with "
                          "port=N (port=0 picks a free one) or host=H") from exc


def serve(out_dir: str | Path, labels: str | Path | None = None, host: str = "127.0.0.1", port: int = 8765,
          open_browser: bool = False, blind=None, handler=None) -> int:
    """Serve the review page of ``out_dir`` until Ctrl-C."""
    server = make_server(out_dir, labels, host, port, blind=blind, handler=handler)
    data = load_episodes(out_dir)
    print(f"reviewing {len(data['episodes'])} episodes of {server.root}; labels in {server.labels}")
    if blind is not None:
        print(f"blind: policy names hidden, trials shuffled with seed {blind.seed}")
    usual = labels_path(out_dir, data)
    if usual.resolve() != server.labels.resolve():
        print(f"warning: {EPISODES_FILE} names the labels file {usual}; \"Re-make report\" reads that one, not "
              f"{server.labels}", file=sys.stderr)
    return serve_until_stopped(server, host, open_browser)


def serve_until_stopped(server: ReviewServer, host: str, open_browser: bool = False) -> int:
    """Answer ``server``'s requests until Ctrl-C (opening its page in this machine's browser if asked)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this address can change the labels",
              file=sys.stderr)
    print(f"open {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped; labels are written as they are given ({server.labels})")
    finally:
        server.server_close()
    return 0
