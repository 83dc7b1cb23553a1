"""LMM grounding: ask a large multimodal model whether a candidate instance is what the query names.

The instance's masks are the bridge: for each of a few views, the image is shown with everything
outside the mask dimmed and the mask outlined, and the model (any OpenAI-compatible chat
completions endpoint, for example a local server running Qwen2.5-VL) answers "yes" or "no". The
fraction of "yes" answers is the grounding score. Every failure (timeout, HTTP error, malformed
JSON, an answer that is neither yes nor no) is recorded in the result; nothing raises and nothing
waits longer than the configured timeout, so the node's query service can call this safely.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import struct
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.query import QueryResult

OUTLINE_RGB = (255, 0, 255)
"""Colour of the drawn mask outline (magenta: rare in indoor scenes)."""
DIM_FACTOR = 0.3
"""Brightness of everything outside the highlighted mask."""
QUESTION = "Is the highlighted object {query}? Answer yes or no."


@dataclass
class ViewAnswer:
    """The model's answer for one view: yes/no, or an error and no answer."""

    answer: bool | None
    text: str = ""
    error: str = ""
    latency_ms: float = 0.0


@dataclass
class GroundingResult:
    """Aggregate over the views shown: score = yes / answered (0 when nothing was answered)."""

    success: bool
    score: float
    yes: int
    answered: int
    views: list[ViewAnswer] = field(default_factory=list)
    message: str = ""


def highlight(rgb: np.ndarray, mask: np.ndarray, dim: float = DIM_FACTOR, outline: int = 2) -> np.ndarray:
    """The image with pixels outside `mask` dimmed and the mask's boundary drawn in magenta."""
    img = np.asarray(rgb, dtype=np.float32).copy()
    m = np.asarray(mask, dtype=bool)
    img[~m] *= dim
    edge = _boundary(m, outline)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    out[edge] = OUTLINE_RGB
    return out


def _boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels outside the mask within `width` pixels of it (so the object itself is not painted over)."""
    grown = mask.copy()
    for _ in range(width):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        grown = g
    return grown & ~mask


def encode_png(rgb: np.ndarray) -> bytes:
    """A PNG file of an [H,W,3] uint8 image (no imaging library needed)."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def data_url(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def parse_yes_no(text: str) -> bool | None:
    """True for an answer starting with yes, False for no, None for anything else."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return None
    if words[0] in ("yes", "yeah", "yep", "true"):
        return True
    if words[0] in ("no", "nope", "false"):
        return False
    return None


class LmmGrounder:
    """Client of one OpenAI-compatible chat-completions endpoint.

    `endpoint` is the full URL of the chat completions route, or a base URL
    (`http://host:8000/v1`) to which `/chat/completions` is appended.
    """

    def __init__(self, endpoint: str, model: str = "", timeout_s: float = 10.0, max_views: int = 3,
                 max_side: int = 448):
        if not endpoint:
            raise ValueError("LMM grounding needs query.lmm_endpoint (an OpenAI-compatible chat completions URL)")
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"query.lmm_endpoint = {endpoint!r} is not an http(s) URL")
        path = url.path.rstrip("/") or ""
        if not path.endswith("/chat/completions"):
            path += "/chat/completions"
        self._scheme, self._host, self._port = url.scheme, url.hostname, url.port
        self._path = path + (f"?{url.query}" if url.query else "")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.max_views = max_views
        self.max_side = max_side

    @classmethod
    def from_config(cls, config: QueryConfig) -> LmmGrounder | None:
        """None when no endpoint is configured (grounding disabled)."""
        if not config.lmm_endpoint:
            return None
        return cls(config.lmm_endpoint, config.lmm_model, config.lmm_timeout_s, config.lmm_max_views)

    def ground(self, query: str, views: Sequence[tuple[np.ndarray, np.ndarray]]) -> GroundingResult:
        """Ask about one instance shown in `views` ((rgb, mask) pairs; the largest masks are used).

        The whole call is bounded by `timeout_s`: views not asked before the deadline count as errors.
        """
        chosen = sorted(views, key=lambda v: -int(np.count_nonzero(v[1])))[: self.max_views]
        chosen = [v for v in chosen if np.count_nonzero(v[1]) > 0]
        if not chosen:
            return GroundingResult(False, 0.0, 0, 0, [], "no view shows the instance")
        deadline = time.monotonic() + self.timeout_s
        answers: list[ViewAnswer] = []
        for rgb, mask in chosen:
            left = deadline - time.monotonic()
            if left <= 0.05:
                answers.append(ViewAnswer(None, error=f"timed out: the {self.timeout_s:.1f} s budget was spent"))
                continue
            answers.append(self._ask_bounded(query, self._shrink(highlight(rgb, mask)), left))
        yes = sum(1 for a in answers if a.answer is True)
        answered = sum(1 for a in answers if a.answer is not None)
        errors = [a.error for a in answers if a.error]
        score = yes / answered if answered else 0.0
        message = f"{yes} of {answered} answered views say yes"
        if errors:
            message += f"; {len(errors)} failed: " + "; ".join(dict.fromkeys(errors))
        return GroundingResult(answered > 0, score, yes, answered, answers, message)

    def _shrink(self, img: np.ndarray) -> np.ndarray:
        """Downsample by an integer step so the longer side is at most max_side (keeps requests small)."""
        step = int(np.ceil(max(img.shape[:2]) / self.max_side))
        return img[::step, ::step] if step > 1 else img

    def _ask_bounded(self, query: str, image: np.ndarray, timeout: float) -> ViewAnswer:
        """`_ask` with a hard deadline: socket timeouts bound each read, this bounds the whole exchange
        (a server trickling bytes would otherwise keep resetting the socket timeout)."""
        box: list[ViewAnswer] = []
        worker = threading.Thread(target=lambda: box.append(self._ask(query, image, timeout)),
                                  name="iggt-lmm-request", daemon=True)
        worker.start()
        worker.join(timeout + 0.05)
        if box:
            return box[0]
        return ViewAnswer(None, error=f"timed out after {timeout:.1f} s waiting for {self._host}",
                          latency_ms=timeout * 1e3)

    def _ask(self, query: str, image: np.ndarray, timeout: float) -> ViewAnswer:
        body = {
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}},
                {"type": "text", "text": QUESTION.format(query=query)},
            ]}],
            "max_tokens": 3,
            "temperature": 0.0,
        }
        if self.model:
            body["model"] = self.model
        t0 = time.perf_counter()

        def done(answer: bool | None, text: str = "", error: str = "") -> ViewAnswer:
            return ViewAnswer(answer, text, error, (time.perf_counter() - t0) * 1e3)

        conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=timeout)
        try:
            conn.request("POST", self._path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                return done(None, error=f"HTTP {resp.status} {resp.reason}: {payload[:200]!r}")
        except TimeoutError:
            return done(None, error=f"timed out after {timeout:.1f} s waiting for {self._host}")
        except (OSError, http.client.HTTPException) as exc:
            return done(None, error=f"request to {self._host} failed: {exc}")
        finally:
            conn.close()
        try:
            text = json.loads(payload)["choices"][0]["message"]["content"]
            if isinstance(text, list):  # content given as parts
                text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
            text = str(text)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return done(None, error=f"malformed response (not a chat completion): {exc!r}: {payload[:120]!r}")
        answer = parse_yes_no(text)
        if answer is None:
            return done(None, text, error=f"answer is neither yes nor no: {text[:80]!r}")
        return done(answer, text)

    def rerank(self, query: str, candidates: Sequence[tuple[int, Sequence[tuple[np.ndarray, np.ndarray]]]],
               ) -> list[tuple[int, GroundingResult]]:
        """Ground each (instance ID, views) candidate; best score first, failures last.

        Candidates are asked one after another, each bounded by `timeout_s`: ask about the few best
        candidates of an embedding query, not the whole map.
        """
        results = [(iid, self.ground(query, views)) for iid, views in candidates]
        return sorted(results, key=lambda r: (not r[1].success, -r[1].score))


def ground_result(result: QueryResult, query: str, grounder: LmmGrounder,
                  views_of: Callable[[int], Sequence[tuple[np.ndarray, np.ndarray]]], top_n: int = 3) -> QueryResult:
    """Re-order the best `top_n` instances of an embedding query by the LMM's yes fraction.

    Scores stay the embedding scores (so the response keeps one meaning per field); only the order
    of the grounded candidates changes, ties keep the embedding order. Candidates the LMM could not
    judge (no views, timeouts, errors) keep their place after the judged ones. The message says what
    the LMM answered, or why grounding failed; a failed grounding never fails the query.
    """
    if not result.success or not result.ranked:
        return result
    t0 = time.perf_counter()
    head, tail = result.ranked[:top_n], result.ranked[top_n:]
    judged = []
    notes = []
    for pos, ranked in enumerate(head):
        g = grounder.ground(query, views_of(ranked.instance.id))
        judged.append((pos, ranked, g))
        notes.append(f"{ranked.instance.id}: {g.yes}/{g.answered} yes" if g.success
                     else f"{ranked.instance.id}: {g.message}")
    order = sorted(judged, key=lambda j: (not j[2].success, -j[2].score if j[2].success else 0.0, j[0]))
    message = result.message + "; LMM grounding " + ", ".join(notes)
    latency = result.latency_ms + (time.perf_counter() - t0) * 1e3
    return QueryResult(True, message, [j[1] for j in order] + tail, result.frame_id, latency)
