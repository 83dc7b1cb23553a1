"""InstanceEmbedder: per-instance aggregation over views, and re-embedding only new or changed instances."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.crop import crop_region, view_regions
from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.encoders import RegionEncoder, normalize_rows
from iggt_ros.vlm.types import ViewObservation


class MeanColorEncoder(RegionEncoder):
    """A real, tiny region encoder: the mean colour under the mask; counts what it is asked to encode."""

    name = "mean_color"
    dim = 3
    space = "rgb"

    def __init__(self, gate: threading.Event | None = None):
        self.calls = 0
        self.regions = 0
        self.gate = gate

    def encode(self, regions):
        if self.gate is not None:
            self.gate.wait(5.0)
        self.calls += 1
        self.regions += len(regions)
        return normalize_rows(np.stack([r.rgb[r.mask].mean(axis=0) + 1e-3 for r in regions]))


def make_view(stamp: int, objects: list[tuple[int, tuple[int, int, int], int, int, int]],
              size: tuple[int, int] = (120, 160)) -> ViewObservation:
    """objects: (id, colour, row, col, side) squares on a grey background."""
    rgb = np.full(size + (3,), 90, np.uint8)
    ids = np.zeros(size, np.uint16)
    for iid, color, r, c, side in objects:
        rgb[r:r + side, c:c + side] = color
        ids[r:r + side, c:c + side] = iid
    return ViewObservation(camera="cam", stamp_ns=stamp, rgb=rgb, instance_ids=ids)


def config(**kw) -> QueryConfig:
    base = dict(embed_min_area_px=20, embed_refresh_views=4, embed_area_growth=0.25, embed_max_views=3,
                embed_queue_size=2)
    base.update(kw)
    return QueryConfig(**base)


def test_only_new_or_changed_instances_are_embedded():
    enc = MeanColorEncoder()
    emb = InstanceEmbedder(enc, config())
    red, blue = (220, 20, 20), (20, 20, 220)
    assert sorted(emb.process(make_view(1, [(1, red, 10, 10, 20), (2, blue, 50, 80, 20)]))) == [1, 2]
    assert enc.regions == 2
    # Same sizes again: nothing changed, nothing encoded.
    assert emb.process(make_view(2, [(1, red, 12, 10, 20), (2, blue, 50, 82, 20)])) == []
    # Instance 1 seen 40 % larger (area growth > 25 %): re-embedded; instance 2 unchanged.
    assert emb.process(make_view(3, [(1, red, 10, 10, 24), (2, blue, 50, 80, 20)])) == [1]
    # A slightly larger view (10 %) is not a change.
    assert emb.process(make_view(4, [(1, red, 10, 10, 25), (2, blue, 50, 80, 20)])) == []
    # A new instance appears: only it is embedded.
    assert emb.process(make_view(5, [(1, red, 10, 10, 20), (3, (20, 200, 20), 80, 120, 15)])) == [3]
    assert enc.regions == 4 and enc.calls == 3
    # Refresh: instance 2 has now been seen in 4 views since its embedding (views 2, 3, 4 and this one).
    assert emb.process(make_view(6, [(2, blue, 50, 80, 20)])) == [2]
    assert emb.stats.regions_encoded == enc.regions == 5
    # Masks below the minimum area are ignored entirely.
    assert emb.process(make_view(7, [(4, red, 0, 0, 4)])) == []
    assert emb.store.get(4) is None


def test_embedding_is_area_weighted_mean_of_best_views():
    enc = MeanColorEncoder()
    emb = InstanceEmbedder(enc, config(embed_area_growth=0.0, embed_refresh_views=1, embed_max_views=2))
    emb.process(make_view(1, [(1, (200, 0, 0), 0, 0, 10)]))     # small red view, weight 100
    emb.process(make_view(2, [(1, (0, 0, 200), 0, 0, 30)]))     # large blue view, weight 900
    vec = emb.store.get(1).vector
    assert np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    assert vec[2] > 0.9 and vec[0] > 0.05, vec  # dominated by the larger view, the small one still counts
    emb.process(make_view(3, [(1, (0, 200, 0), 0, 0, 40)]))     # third view: only the best two are kept
    item = emb.store.get(1)
    assert item.views == 2 and item.version == 3
    assert item.vector[0] < 1e-3  # the small red view was dropped


def test_view_weights_use_confidence():
    view = make_view(1, [(1, (200, 0, 0), 0, 0, 10), (2, (0, 0, 200), 20, 20, 10)])
    view.confidence = np.where(view.instance_ids == 2, 0.5, 2.0).astype(np.float32)
    regions = view_regions(view, min_area_px=1)
    assert regions[1] == (100, pytest.approx(200.0)) and regions[2] == (100, pytest.approx(50.0))


def test_forget_removes_instance():
    emb = InstanceEmbedder(MeanColorEncoder(), config())
    emb.process(make_view(1, [(1, (200, 0, 0), 0, 0, 10)]))
    emb.forget([1])
    assert emb.store.get(1) is None and len(emb.store) == 0
    assert emb.process(make_view(2, [(1, (200, 0, 0), 0, 0, 10)])) == [1]  # new again


def test_worker_runs_off_the_calling_thread_with_a_bounded_queue():
    gate = threading.Event()
    enc = MeanColorEncoder(gate=gate)
    emb = InstanceEmbedder(enc, config(embed_queue_size=2)).start()
    try:
        first = make_view(1, [(1, (200, 0, 0), 0, 0, 10)])
        assert emb.submit(first)  # the worker takes it and blocks in the encoder
        for _ in range(200):
            if emb._busy:
                break
            threading.Event().wait(0.01)
        # submit never blocks: the queue holds two views, further ones push the oldest out.
        results = [emb.submit(make_view(s, [(s, (0, 0, 200), 0, 0, 10)])) for s in range(2, 6)]
        assert results == [True, True, False, False]
        assert emb.stats.views_dropped == 2
        gate.set()
        assert emb.wait_idle(5.0)
        assert sorted(emb.store.vectors()) == [1, 4, 5]  # views 2 and 3 were dropped
    finally:
        gate.set()
        emb.stop()


def test_crop_keeps_aspect_and_pads_outside_the_image():
    rgb = np.zeros((50, 80, 3), np.uint8)
    mask = np.zeros((50, 80), bool)
    mask[0:10, 60:80] = True  # touches the top-right corner
    rgb[mask] = 255
    crop = crop_region(rgb, mask)
    assert crop.rgb.shape[0] == crop.rgb.shape[1] and crop.mask.shape == crop.rgb.shape[:2]
    assert crop.area_px == 200 and crop.mask.sum() == 200
    assert (crop.rgb[crop.mask] == 255).all()


def test_best_views_are_kept_only_when_asked():
    red = (220, 20, 20)
    plain = InstanceEmbedder(MeanColorEncoder(), config())
    plain.process(make_view(1, [(1, red, 10, 10, 20)]))
    assert plain.best_views(1) == []
    keeping = InstanceEmbedder(MeanColorEncoder(), config(embed_refresh_views=1, embed_max_views=3), keep_views=2)
    for stamp, side in ((1, 12), (2, 20), (3, 16)):
        keeping.process(make_view(stamp, [(1, red, 10, 10, side)]))
    views = keeping.best_views(1)
    assert [int(m.sum()) for _, m in views] == [400, 256]  # the two largest masks, best first
    assert keeping.best_views(1, 1)[0][1].sum() == 400 and keeping.best_views(99) == []
