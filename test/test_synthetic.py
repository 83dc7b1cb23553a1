"""Synthetic scenes: layout rules, rig conventions, exactness of the rendered ground truth, trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.synthetic.attributes import COLORS, SHAPES, SIZES, TEXTURES
from iggt_ros.synthetic.render import SceneRenderer
from iggt_ros.synthetic.rig import make_rig
from iggt_ros.synthetic.scene import footprint_radius, make_scene, walkway_points
from iggt_ros.synthetic.sequence import START_NS, iter_steps, make_sequence, plan_sequence
from iggt_ros.synthetic.types import RenderedView, Scene

SEEDS = range(20)


@pytest.fixture(scope="module")
def orbit_stereo():
    return make_sequence(7, num_steps=6, cameras=2, trajectory="orbit", width=252, height=168, num_objects=20)


@pytest.fixture(scope="module")
def walk_sequences():
    """Long low-resolution walks and pans: enough steps for objects to leave the view and return."""
    return {kind: make_sequence(1, num_steps=60, trajectory=kind, width=126, height=84) for kind in ("walk", "pan")}


# --- scenes -------------------------------------------------------------------------------------


def test_scene_is_reproducible_by_seed():
    a, b, c = make_scene(11), make_scene(11), make_scene(12)
    assert len(a.objects) == len(b.objects)
    for x, y in zip(a.objects, b.objects, strict=True):
        assert x.attributes == y.attributes and np.array_equal(x.center, y.center) and x.yaw == y.yaw
    assert np.array_equal(a.room_size, b.room_size)
    assert not np.array_equal(a.room_size, c.room_size)


def test_object_count_and_attribute_ranges():
    counts = []
    for seed in SEEDS:
        scene = make_scene(seed)
        counts.append(len(scene.objects))
        assert [o.id for o in scene.objects] == list(range(1, len(scene.objects) + 1))
        half = scene.room_size[:2] / 2
        for o in scene.objects:
            assert o.shape in SHAPES and o.texture in TEXTURES and o.size_name in SIZES
            assert o.color_rgb == COLORS[o.color_name]
            assert o.center[2] == pytest.approx(o.extent[2] / 2)  # stands on the floor
            assert np.all(np.abs(o.center[:2]) + footprint_radius(o.shape, o.extent) < half)
            assert o.extent[2] < scene.room_size[2] / 2
            lo, hi = SIZES[o.size_name]
            if o.shape in ("cube", "sphere"):
                assert np.allclose(o.extent, o.extent[0]) and lo <= o.extent[0] <= hi
            else:
                assert lo * 0.5 <= o.extent.max() <= hi * 1.6
    assert min(counts) >= 5 and max(counts) <= 30 and len(set(counts)) > 5
    assert len(make_scene(3, num_objects=30).objects) == 30
    assert len(make_scene(3, num_objects=5).objects) == 5


def test_objects_do_not_overlap_and_keep_the_walkway_free():
    for seed in SEEDS:
        scene = make_scene(seed)
        walkway = walkway_points(scene.room_size)
        objs = scene.objects
        for i, a in enumerate(objs):
            ra = footprint_radius(a.shape, a.extent)
            assert np.min(np.linalg.norm(walkway - a.center[:2], axis=1)) > ra + 0.4
            for b in objs[i + 1 :]:
                rb = footprint_radius(b.shape, b.extent)
                assert np.linalg.norm(a.center[:2] - b.center[:2]) > ra + rb


def test_identical_duplicates_stand_side_by_side():
    with_duplicates = 0
    for seed in SEEDS:
        scene = make_scene(seed)
        dups = [o for o in scene.objects if o.duplicate_of]
        with_duplicates += bool(dups)
        for copy in dups:
            orig = scene.object(copy.duplicate_of)
            assert orig.duplicate_of == 0
            assert (copy.shape, copy.color_name, copy.size_name, copy.texture) == (
                orig.shape,
                orig.color_name,
                orig.size_name,
                orig.texture,
            )
            assert np.array_equal(copy.extent, orig.extent) and copy.yaw == orig.yaw
            radius = footprint_radius(orig.shape, orig.extent)
            assert 2 * radius < np.linalg.norm(copy.center - orig.center) <= 2 * radius + 0.16
        # Apart from duplicates, (shape, colour, size) names one object.
        singles = [o.attributes.values() for o in scene.objects if not o.duplicate_of]
        assert len({tuple(s) for s in singles}) == len(singles)
    assert with_duplicates >= len(SEEDS) * 0.6


# --- rig ----------------------------------------------------------------------------------------


def test_rig_extrinsics():
    mono = make_rig(1, 168, 112)
    front = mono.base_from_camera[0]
    assert mono.names == ["front"]
    assert front[2, 3] == pytest.approx(1.1)
    optical_z = front[:3, 2]
    tilt = np.radians(20.0)
    assert np.allclose(optical_z, [np.cos(tilt), 0.0, -np.sin(tilt)])  # forward, tilted down
    assert front[:3, 0] @ np.array([0, -1, 0]) == pytest.approx(1.0)  # optical x = base right
    for cam in front, *make_rig(4, 168, 112).base_from_camera:
        assert np.allclose(cam[:3, :3] @ cam[:3, :3].T, np.eye(3)) and np.linalg.det(cam[:3, :3]) == pytest.approx(1)
    stereo = make_rig(2, 168, 112)
    left, right = stereo.base_from_camera
    assert stereo.names == ["front_left", "front_right"]
    assert np.allclose(left[:3, :3], right[:3, :3])
    assert left[1, 3] - right[1, 3] == pytest.approx(0.2)  # left camera on +y
    k = stereo.intrinsics
    assert k[0, 2] == pytest.approx(83.5) and k[1, 2] == pytest.approx(55.5) and k[0, 0] == k[1, 1]


# --- rendering ----------------------------------------------------------------------------------


def _unproject(view: RenderedView) -> np.ndarray:
    """[H,W,3] world points seen at every pixel centre."""
    h, w = view.depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(view.intrinsics).T
    cam = rays * view.depth[..., None].astype(np.float64)
    return cam @ view.world_from_camera[:3, :3].T + view.world_from_camera[:3, 3]


def _surface_residual(scene: Scene, object_id: int, points: np.ndarray) -> np.ndarray:
    """Signed-distance-like residual of world points to the surface of object `object_id` or of the room."""
    if object_id == 0:
        lo = np.array([-scene.room_size[0] / 2, -scene.room_size[1] / 2, 0.0])
        hi = np.array([scene.room_size[0] / 2, scene.room_size[1] / 2, scene.room_size[2]])
        return np.minimum(points - lo, hi - points).min(axis=1)
    o = scene.object(object_id)
    c, s = np.cos(o.yaw), np.sin(o.yaw)
    p = points - o.center
    x, y, z = c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]
    h = o.extent / 2
    rho = np.hypot(x, y)
    if o.shape in ("cube", "box"):
        return np.maximum.reduce([np.abs(x) - h[0], np.abs(y) - h[1], np.abs(z) - h[2]])
    if o.shape == "sphere":
        return np.sqrt(x * x + y * y + z * z) - h[0]
    if o.shape == "cylinder":
        return np.maximum(rho - h[0], np.abs(z) - h[2])
    slope = h[0] / (2 * h[2])  # cone: radius shrinks from h[0] at the base to 0 at the apex
    return np.maximum.reduce([(rho - slope * (h[2] - z)) / np.sqrt(1 + slope**2), -z - h[2], z - h[2]])


def test_every_pixel_lies_on_the_surface_its_id_names(orbit_stereo):
    scene = orbit_stereo.scene
    shapes_seen = set()
    for view in orbit_stereo.views():
        assert view.depth.dtype == np.float32 and np.all(np.isfinite(view.depth)) and view.depth.min() > 0
        points = _unproject(view).reshape(-1, 3)
        ids = view.instance_ids.reshape(-1)
        for object_id in np.unique(ids):
            residual = _surface_residual(scene, int(object_id), points[ids == object_id])
            tolerance = 2e-6 * view.depth.max() + 1e-6
            assert np.abs(residual).max() < tolerance, (object_id, np.abs(residual).max())
            if object_id:
                shapes_seen.add(scene.object(int(object_id)).shape)
    assert shapes_seen == set(SHAPES)


def _uniform_ids(ids: np.ndarray) -> np.ndarray:
    """True where the 3x3 neighbourhood of a pixel has one ID (away from silhouettes); False on the border."""
    out = np.zeros(ids.shape, dtype=bool)
    core = ids[1:-1, 1:-1]
    same = np.ones(core.shape, dtype=bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            same &= ids[1 + dv : ids.shape[0] - 1 + dv, 1 + du : ids.shape[1] - 1 + du] == core
    out[1:-1, 1:-1] = same
    return out


def _depth_slope(depth: np.ndarray) -> np.ndarray:
    """Largest depth change to a 4-neighbour of each pixel (edge-padded)."""
    d = np.pad(depth.astype(np.float64), 1, mode="edge")
    core = d[1:-1, 1:-1]
    return np.maximum.reduce(
        [
            np.abs(d[1:-1, :-2] - core),
            np.abs(d[1:-1, 2:] - core),
            np.abs(d[:-2, 1:-1] - core),
            np.abs(d[2:, 1:-1] - core),
        ]
    )


def _reprojection_check(src: RenderedView, dst: RenderedView) -> dict[str, float]:
    """Project src's depth into dst; compare depth and IDs at the nearest pixel where dst sees the point."""
    points = _unproject(src)[_uniform_ids(src.instance_ids)]
    src_ids = src.instance_ids[_uniform_ids(src.instance_ids)]
    world_to_dst = np.linalg.inv(dst.world_from_camera)
    cam = points @ world_to_dst[:3, :3].T + world_to_dst[:3, 3]
    front = cam[:, 2] > 0.05
    cam, src_ids = cam[front], src_ids[front]
    uv = cam @ dst.intrinsics.T
    u = np.rint(uv[:, 0] / uv[:, 2]).astype(int)
    v = np.rint(uv[:, 1] / uv[:, 2]).astype(int)
    h, w = dst.depth.shape
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z, src_ids = u[inside], v[inside], cam[inside, 2], src_ids[inside]
    interior = _uniform_ids(dst.instance_ids)[v, u]
    u, v, z, src_ids = u[interior], v[interior], z[interior], src_ids[interior]
    seen = dst.depth[v, u].astype(np.float64)
    tolerance = 0.002 * z + 0.75 * _depth_slope(dst.depth)[v, u]  # nearest-pixel rounding on slanted surfaces
    visible = np.abs(seen - z) <= tolerance
    behind = seen > z + tolerance  # dst would see through the point: impossible if both views are right
    return {
        "checked": float(len(z)),
        "visible": float(visible.mean()),
        "see_through": float(behind.mean()),
        "id_agreement": float((dst.instance_ids[v, u][visible] == src_ids[visible]).mean()),
        "depth_rel_error": float(np.median((np.abs(seen - z) / z)[visible])),
        "objects_matched": float(len(np.unique(src_ids[visible & (src_ids > 0)]))),
    }


def _consistent(r: dict[str, float], min_visible: float, min_checked: int = 5000, min_objects: int = 3) -> bool:
    """Two views agree: nothing seen through, same IDs and depth where visible, enough points re-found."""
    return (
        r["checked"] > min_checked
        and r["visible"] > min_visible
        and r["see_through"] < 0.003
        and r["id_agreement"] > 0.998
        and r["depth_rel_error"] < 0.01
        and r["objects_matched"] >= min_objects
    )


def test_depth_and_ids_agree_across_views(orbit_stereo):
    steps = orbit_stereo.steps
    pairs = [
        (steps[0][0], steps[0][1], 0.95),  # stereo pair, same instant: almost everything is seen by both
        (steps[2][1], steps[2][0], 0.95),
        (steps[0][0], steps[1][0], 0.1),  # consecutive steps of one camera, 72 degrees apart on the orbit
        (steps[3][1], steps[4][0], 0.1),  # across cameras and time
        (steps[1][0], steps[3][0], 0.1),  # wide baseline: more occlusion
    ]
    for src, dst, min_visible in pairs:
        r = _reprojection_check(src, dst)
        assert _consistent(r, min_visible), r


@pytest.mark.parametrize(
    ("trajectory", "cameras", "room"), [("walk", 3, "hall"), ("pan", 2, "room"), ("orbit", 4, "room")]
)
def test_rigs_and_trajectories_are_consistent(trajectory, cameras, room):
    seq = make_sequence(
        21, num_steps=2, cameras=cameras, trajectory=trajectory, width=168, height=112, coverage=0.05, room=room
    )
    matched = 0
    for step in seq.steps:
        for left, right in zip(step[:-1], step[1:], strict=True):  # neighbouring cameras of the rig
            for src, dst in ((left, right), (right, left)):
                r = _reprojection_check(src, dst)
                assert _consistent(r, 0.5, min_checked=2000, min_objects=0), (src.camera, dst.camera, r)
                matched += r["objects_matched"]
    for before, after in zip(seq.steps[0], seq.steps[1], strict=True):  # one camera over time
        r = _reprojection_check(before, after)
        assert _consistent(r, 0.5, min_checked=2000, min_objects=0), (before.camera, r)
        matched += r["objects_matched"]
    assert matched >= 6


@pytest.mark.parametrize("error", ["x", "y", "z", "pitch"])
def test_reprojection_check_catches_a_wrong_pose(orbit_stereo, error):
    src, dst = orbit_stereo.steps[0]
    wrong = dst.world_from_camera.copy()
    if error == "pitch":
        c, s = np.cos(np.radians(1.0)), np.sin(np.radians(1.0))
        wrong[:3, :3] = wrong[:3, :3] @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    else:
        wrong["xyz".index(error), 3] += 0.05
    r = _reprojection_check(src, RenderedView(**{**dst.__dict__, "world_from_camera": wrong}))
    assert not _consistent(r, 0.95), r


def test_images_have_content(orbit_stereo):
    for view in orbit_stereo.views():
        assert view.rgb.dtype == np.uint8 and view.rgb.shape == (168, 252, 3)
        assert view.instance_ids.dtype == np.uint16
        assert view.rgb.reshape(-1, 3).std(axis=0).min() > 10
        assert len(np.unique(view.rgb.reshape(-1, 3), axis=0)) > 200
        assert len(np.unique(view.instance_ids)) >= 3
        assert view.depth.max() > 1.5 * view.depth.min()


def test_renderer_culling_changes_nothing():
    scene = make_scene(5, num_objects=25)
    plan = plan_sequence(5, num_steps=3, trajectory="walk", width=140, height=98, num_objects=25)
    for step in range(3):
        pose = plan.world_from_camera(step, 0)
        culled = SceneRenderer(scene).render(plan.rig.intrinsics, pose, 140, 98)
        full = SceneRenderer(scene, cull=False).render(plan.rig.intrinsics, pose, 140, 98)
        assert np.array_equal(culled.instance_ids, full.instance_ids)
        assert np.array_equal(culled.depth, full.depth) and np.array_equal(culled.rgb, full.rgb)


def test_camera_outside_the_room_or_inside_an_object_is_rejected():
    scene = make_scene(0, num_objects=30)
    assert {o.shape for o in scene.objects} == set(SHAPES)
    k = make_rig(1, 56, 56).intrinsics
    pose = np.eye(4)
    pose[:3, 3] = [scene.room_size[0], 0.0, 1.0]
    with pytest.raises(ValueError, match="outside the room"):
        SceneRenderer(scene).render(k, pose, 56, 56)
    for obj in scene.objects:
        pose[:3, 3] = obj.center + np.array([0.0, 0.0, obj.extent[2] * 0.2])
        with pytest.raises(ValueError, match=f"inside object {obj.id} "):
            SceneRenderer(scene).render(k, pose, 56, 56)
        pose[:3, 3] = obj.center + np.array([0.0, 0.0, obj.extent[2] * 0.51])  # just above it: fine
        assert SceneRenderer(scene).render(k, pose, 56, 56).depth.min() > 0


# --- sequences ----------------------------------------------------------------------------------


def test_sequence_is_reproducible_and_stamped():
    kwargs = dict(num_steps=3, cameras=2, trajectory="walk", width=84, height=56, rate_hz=20.0)
    a, b = make_sequence(4, **kwargs), make_sequence(4, **kwargs)
    other = make_sequence(5, **kwargs)
    assert a.num_steps == 3 and len(a.steps[0]) == 2 and a.rig.names == ["front_left", "front_right"]
    for va, vb, vo in zip(a.views(), b.views(), other.views(), strict=True):
        assert np.array_equal(va.rgb, vb.rgb) and np.array_equal(va.depth, vb.depth)
        assert np.array_equal(va.world_from_camera, vb.world_from_camera)
        assert not np.array_equal(va.rgb, vo.rgb)
    assert [s[0].stamp_ns for s in a.steps] == [START_NS, START_NS + 50_000_000, START_NS + 100_000_000]
    assert all(v.stamp_ns == step[0].stamp_ns for step in a.steps for v in step)
    for t, step in enumerate(a.steps):
        for c, view in enumerate(step):
            assert np.allclose(view.world_from_camera, a.world_from_base[t] @ a.rig.base_from_camera[c])
            assert a.world_from_base[t][2, 3] == 0.0


def test_streamed_steps_match_the_full_sequence():
    plan = plan_sequence(8, num_steps=3, cameras=2, trajectory="pan", width=56, height=56)
    full = make_sequence(8, num_steps=3, cameras=2, trajectory="pan", width=56, height=56)
    streamed = iter_steps(plan)
    assert not isinstance(streamed, list)
    for views, expected in zip(streamed, full.steps, strict=True):
        for view, want in zip(views, expected, strict=True):
            assert view.camera == want.camera and view.stamp_ns == want.stamp_ns
            assert np.array_equal(view.instance_ids, want.instance_ids) and np.array_equal(view.rgb, want.rgb)


def _visibility(sequence, min_pixels: int = 6) -> np.ndarray:
    """[T, N+1] True where object n covers at least min_pixels of the (single) camera at step t."""
    n = len(sequence.scene.objects)
    counts = np.stack([np.bincount(s[0].instance_ids.ravel(), minlength=n + 1) for s in sequence.steps])
    return counts >= min_pixels


def test_objects_leave_the_view_and_come_back(walk_sequences):
    for kind, seq in walk_sequences.items():
        seen = _visibility(seq)[:, 1:]
        returning = 0
        for track in seen.T:
            steps = np.flatnonzero(track)
            if len(steps) and np.any(np.diff(steps) > 3):
                returning += 1
        assert returning >= 2, kind
        assert seen.any(axis=0).sum() >= 0.6 * seen.shape[1], kind  # the trajectory shows most of the room


def test_objects_occlude_each_other(walk_sequences):
    seq = walk_sequences["walk"]
    occluded = set()
    for step in seq.steps[::6]:
        view = step[0]
        for obj in seq.scene.objects:
            alone = Scene(seq.scene.seed, seq.scene.room_size, [obj], seq.scene.wall_colors)
            ids = SceneRenderer(alone).render(view.intrinsics, view.world_from_camera, 126, 84).instance_ids
            silhouette = ids == obj.id
            if silhouette.sum() >= 6 and (view.instance_ids[silhouette] != obj.id).mean() > 0.2:
                assert np.all(view.instance_ids[silhouette] != 0)  # only other objects can cover it
                occluded.add(obj.id)
    assert len(occluded) >= 2


@pytest.mark.parametrize("trajectory", ["orbit", "walk", "pan"])
def test_trajectories_stay_inside_the_room_and_clear_of_objects(trajectory):
    plan = plan_sequence(9, num_steps=40, cameras=3, trajectory=trajectory, width=56, height=56, num_objects=30)
    half = plan.scene.room_size[:2] / 2
    for step in range(40):
        for cam in range(3):
            pos = plan.world_from_camera(step, cam)[:3, 3]
            assert np.all(np.abs(pos[:2]) < half - 0.5)
            for o in plan.scene.objects:
                assert np.linalg.norm(pos[:2] - o.center[:2]) > footprint_radius(o.shape, o.extent) + 0.25
    yaw = [np.arctan2(p[1, 0], p[0, 0]) for p in plan.world_from_base]
    moved = np.linalg.norm(plan.world_from_base[-1][:2, 3] - plan.world_from_base[20][:2, 3])
    assert np.ptp(np.unwrap(yaw)) > np.radians(30) and moved > 0.05


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="trajectory"):
        plan_sequence(0, trajectory="fly")
    with pytest.raises(ValueError, match="room"):
        make_scene(0, room="cave")
    with pytest.raises(ValueError, match="num_cameras"):
        make_rig(0, 10, 10)
