"""LMM grounding against real local HTTP servers that speak the chat-completions API.

The rule server decodes the image it is sent, finds the highlighted object (inside the magenta
outline the client draws) and answers yes when the query names the dominant colour of it, the way
a vision-language model would; other servers stall or answer garbage.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from iggt_ros.config import QueryConfig
from iggt_ros.perception.records import InstanceRecord
from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.encoders import RegionEncoder, TextEncoder, normalize_rows
from iggt_ros.vlm.lmm import OUTLINE_RGB, LmmGrounder, encode_png, ground_result, highlight, parse_yes_no
from iggt_ros.vlm.query import answer_query
from iggt_ros.vlm.types import ViewObservation

Image = pytest.importorskip("PIL.Image")


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def highlighted_color(img: np.ndarray) -> str:
    """Dominant colour name of the non-outline pixels within the outline's bounding box."""
    outline = (img == np.array(OUTLINE_RGB, np.uint8)).all(axis=2)
    ys, xs = np.nonzero(outline)
    box = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(float)
    inside = ~outline[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    mean = box[inside].mean(axis=0)
    return ("red", "green", "blue")[int(np.argmax(mean))]


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 (random port) running in a daemon thread."""

    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.requests: list[dict] = []
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Base(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def read_json(self) -> dict:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.owner.requests.append({"path": self.path, "body": body})
        return body

    def reply(self, status: int, payload: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class RuleHandler(_Base):
    def do_POST(self):
        body = self.read_json()
        content = body["messages"][0]["content"]
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        question = next(p["text"] for p in content if p["type"] == "text")
        answer = "Yes." if highlighted_color(decode_data_url(url)) in question.lower() else "No."
        self.reply(200, json.dumps({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]}).encode())


STALL = threading.Event()


class StallHandler(_Base):
    def do_POST(self):
        self.read_json()
        STALL.wait(10.0)  # never answers within the client's timeout
        self.reply(200, b"{}")


class GarbageHandler(_Base):
    def do_POST(self):
        self.read_json()
        self.reply(200, b"<html>definitely not json", "text/html")


class ErrorHandler(_Base):
    def do_POST(self):
        self.read_json()
        self.reply(500, b'{"error": "model not loaded"}')


class RamblingHandler(_Base):
    def do_POST(self):
        self.read_json()
        self.reply(200, json.dumps({"choices": [{"message": {"content": "Perhaps, it is hard to say."}}]}).encode())


@pytest.fixture
def server(request):
    srv = Server(request.param)
    yield srv
    STALL.set()
    srv.close()
    STALL.clear()


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grey image with a red square and a blue square; their masks."""
    rgb = np.full((96, 128, 3), 120, np.uint8)
    red = np.zeros((96, 128), bool)
    blue = np.zeros((96, 128), bool)
    red[20:50, 10:40] = True
    blue[40:80, 70:110] = True
    rgb[red] = (210, 30, 30)
    rgb[blue] = (30, 40, 210)
    return rgb, red, blue


@pytest.mark.parametrize("server", [RuleHandler], indirect=True)
def test_yes_answers_are_aggregated_over_views(server):
    rgb, red, blue = scene()
    grounder = LmmGrounder(server.url, model="qwen2.5-vl", timeout_s=5.0, max_views=3)
    yes = grounder.ground("the red cube", [(rgb, red)] * 3)
    assert yes.success and yes.yes == 3 and yes.answered == 3 and yes.score == 1.0
    no = grounder.ground("the red cube", [(rgb, blue), (rgb, blue)])
    assert no.success and no.score == 0.0
    # One view's mask is on the wrong object (a segmentation error): two of three say yes.
    mixed = grounder.ground("a blue box", [(rgb, blue), (rgb, red), (rgb, blue)])
    assert mixed.answered == 3 and mixed.yes == 2 and mixed.score == pytest.approx(2 / 3)
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "qwen2.5-vl"
    assert "Is the highlighted object the red cube? Answer yes or no." in json.dumps(req["body"])
    ranked = grounder.rerank("the blue object", [(7, [(rgb, red)]), (9, [(rgb, blue)])])
    assert [iid for iid, _ in ranked] == [9, 7]


@pytest.mark.parametrize("server", [StallHandler], indirect=True)
def test_stalling_server_times_out_and_reports_it(server):
    rgb, red, _ = scene()
    grounder = LmmGrounder(server.url, timeout_s=0.5, max_views=3)
    result = grounder.ground("the red cube", [(rgb, red)] * 3)
    assert not result.success and result.answered == 0 and result.score == 0.0
    assert "timed out" in result.message
    assert all("timed out" in v.error for v in result.views)
    # the whole call is bounded by the timeout, not each view: the first view spends the budget and
    # the others are never asked
    assert "waiting for" in result.views[0].error
    assert all("budget was spent" in v.error for v in result.views[1:])
    assert len(server.requests) <= 1


@pytest.mark.parametrize("server", [GarbageHandler], indirect=True)
def test_garbage_response_is_reported(server):
    rgb, red, _ = scene()
    result = LmmGrounder(server.url, timeout_s=2.0, max_views=1).ground("the red cube", [(rgb, red)])
    assert not result.success and "malformed response" in result.message


@pytest.mark.parametrize("server", [ErrorHandler], indirect=True)
def test_http_error_is_reported(server):
    rgb, red, _ = scene()
    result = LmmGrounder(server.url, timeout_s=2.0, max_views=1).ground("the red cube", [(rgb, red)])
    assert not result.success and "HTTP 500" in result.message and "model not loaded" in result.message


@pytest.mark.parametrize("server", [RamblingHandler], indirect=True)
def test_answer_that_is_neither_yes_nor_no_is_not_counted(server):
    rgb, red, _ = scene()
    result = LmmGrounder(server.url, timeout_s=2.0, max_views=2).ground("the red cube", [(rgb, red)] * 2)
    assert not result.success and result.answered == 0 and "neither yes nor no" in result.message


def test_unreachable_endpoint_is_reported():
    srv = Server(RuleHandler)
    url = srv.url
    srv.close()  # nothing listens on that port any more
    rgb, red, _ = scene()
    result = LmmGrounder(url, timeout_s=2.0, max_views=1).ground("the red cube", [(rgb, red)])
    assert not result.success and "failed" in result.message


def test_highlight_png_and_parsing():
    rgb, red, _ = scene()
    img = highlight(rgb, red)
    assert (img[red] == rgb[red]).all()                           # the object is untouched
    assert img[90, 120].max() < rgb[90, 120].max() * 0.5          # the rest is dimmed
    assert (img[19, 20] == OUTLINE_RGB).all()                     # outline just outside the mask
    back = np.asarray(Image.open(io.BytesIO(encode_png(img))).convert("RGB"))
    assert (back == img).all()
    assert parse_yes_no("Yes, it is.") is True and parse_yes_no(" no") is False
    assert parse_yes_no("I think so") is None and parse_yes_no("") is None


def test_configuration():
    assert LmmGrounder.from_config(QueryConfig()) is None  # disabled without an endpoint
    g = LmmGrounder.from_config(QueryConfig(lmm_endpoint="http://localhost:8000/v1/chat/completions",
                                            lmm_timeout_s=3.0))
    assert g._path == "/v1/chat/completions" and g.timeout_s == 3.0
    with pytest.raises(ValueError, match="lmm_endpoint"):
        LmmGrounder("localhost:8000")


class ShapeBlindEncoder(RegionEncoder, TextEncoder):
    """Embeds every region and text alike: the embedding ranking cannot tell objects apart."""

    name, dim, space = "blind", 2, "blind"

    def encode(self, items):
        return normalize_rows(np.ones((len(items), 2), np.float32))


@pytest.mark.parametrize("server", [RuleHandler], indirect=True)
def test_grounding_reorders_the_best_candidates_of_a_query(server):
    rgb, red, blue = scene()
    ids = np.zeros(red.shape, np.uint16)
    ids[red], ids[blue] = 1, 2
    blind = ShapeBlindEncoder()
    embedder = InstanceEmbedder(blind, QueryConfig(embed_min_area_px=10), keep_views=2)
    embedder.process(ViewObservation("cam", 1, rgb, ids))
    assert len(embedder.best_views(1)) == 1 and embedder.best_views(1)[0][1].sum() == red.sum()
    instances = [InstanceRecord(id=i, centroid=np.zeros(3), box_center=np.zeros(3), box_size=np.ones(3),
                                  embedding=embedder.store.get(i).vector) for i in (1, 2)]
    grounder = LmmGrounder(server.url, timeout_s=5.0)
    for text, best in (("the blue box", 2), ("the red cube", 1)):
        base = answer_query(text, instances, blind)
        grounded = ground_result(base, text, grounder, embedder.best_views, top_n=2)
        assert grounded.success and grounded.instances[0].id == best
        assert sorted(grounded.scores) == sorted(base.scores)  # scores keep their meaning
        assert "LMM grounding" in grounded.message and "1/1 yes" in grounded.message


def test_failed_grounding_keeps_the_embedding_order():
    srv = Server(RuleHandler)
    url = srv.url
    srv.close()  # unreachable
    blind = ShapeBlindEncoder()
    instances = [InstanceRecord(id=i, centroid=np.zeros(3), box_center=np.zeros(3), box_size=np.ones(3),
                                  embedding=np.array([1.0, 0.0], np.float32)) for i in (5, 6)]
    rgb, red, _ = scene()
    base = answer_query("the red cube", instances, blind)
    grounded = ground_result(base, "the red cube", LmmGrounder(url, timeout_s=1.0), lambda iid: [(rgb, red)])
    assert grounded.success and grounded.instances == base.instances and "failed" in grounded.message
