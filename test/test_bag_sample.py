"""`iggt-ros make-sample-bag` writes real rosbag2 bags whose ground truth is geometrically consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.typesys import Stores, get_typestore

from iggt_ros.cli import main
from iggt_ros.messages.layouts import STATE_CONFIRMED, STATE_LOST, STATE_TENTATIVE
from iggt_ros.messages.message import stamp_ns
from iggt_ros.messages.tf_buffer import TransformBuffer
from iggt_ros.synthetic.sequence import plan_sequence

W, H, FRAMES = 140, 84, 12
CASES = {
    "mcap": dict(cameras=2, trajectory="walk", seed=3),
    "sqlite3": dict(cameras=3, trajectory="orbit", seed=5),
}


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for storage, case in CASES.items():
        path = tmp_path_factory.mktemp("bags") / f"sample_{storage}"
        rc = main(["make-sample-bag", str(path), "--scene", str(case["seed"]), "--cameras", str(case["cameras"]),
                   "--frames", str(FRAMES), "--storage", storage, "--trajectory", case["trajectory"],
                   "--width", str(W), "--height", str(H)])
        assert rc == 0
        out[storage] = path
    return out


def read_all(path: Path):
    """Every message of the bag, decoded by a plain rosbags reader from the definitions in the bag."""
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        conns = {c.topic: c for c in reader.connections}
        msgs: dict[str, list] = {t: [] for t in conns}
        for conn, record_ns, raw in reader.messages():
            msgs[conn.topic].append((record_ns, reader.deserialize(raw, conn.msgtype)))
    return conns, msgs


def cameras_of(storage: str) -> list[str]:
    n = CASES[storage]["cameras"]
    return ["front_left", "front_right"] if n == 2 else [f"cam{i}" for i in range(n)]


@pytest.mark.parametrize("storage", list(CASES))
def test_every_topic_is_present_with_counts_headers_and_encodings(bags, storage):
    conns, msgs = read_all(bags[storage])
    cams = cameras_of(storage)
    expected = {"/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage",
                "/gt/objects": "iggt_ros/msg/InstanceArray"}
    for cam in cams:
        expected.update({f"/{cam}/image_raw": "sensor_msgs/msg/Image",
                         f"/{cam}/camera_info": "sensor_msgs/msg/CameraInfo",
                         f"/gt/{cam}/instances": "sensor_msgs/msg/Image",
                         f"/gt/{cam}/depth": "sensor_msgs/msg/Image"})
    assert {t: c.msgtype for t, c in conns.items()} == expected
    assert len(msgs["/tf_static"]) == 1
    assert conns["/tf_static"].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    for topic, items in msgs.items():
        if topic != "/tf_static":
            assert len(items) == FRAMES, topic
        for record_ns, msg in items:
            if hasattr(msg, "header"):
                assert stamp_ns(msg.header.stamp) == record_ns, topic
    for cam in cams:
        stamps = [r for r, _ in msgs[f"/{cam}/image_raw"]]
        assert stamps == sorted(stamps) and len(set(stamps)) == FRAMES
        for topic, encoding, step in [(f"/{cam}/image_raw", "rgb8", 3 * W), (f"/gt/{cam}/instances", "16UC1", 2 * W),
                                      (f"/gt/{cam}/depth", "32FC1", 4 * W)]:
            for _, msg in msgs[topic]:
                assert (msg.encoding, msg.width, msg.height, msg.step, len(msg.data)) == (
                    encoding, W, H, step, step * H), topic
                assert msg.header.frame_id == f"{cam}_optical_frame"
        for _, info in msgs[f"/{cam}/camera_info"]:
            assert (info.width, info.height, info.header.frame_id) == (W, H, f"{cam}_optical_frame")
            assert info.k[0] > 0 and info.k[8] == 1.0
    (_, static), = msgs["/tf_static"]
    assert sorted((t.header.frame_id, t.child_frame_id) for t in static.transforms) == sorted(
        ("base_link", f"{cam}_optical_frame") for cam in cams)
    for _, tf in msgs["/tf"]:
        assert [(t.header.frame_id, t.child_frame_id) for t in tf.transforms] == [("odom", "base_link")]


def depth_ids(msgs, cam: str, step: int):
    _, d = msgs[f"/gt/{cam}/depth"][step]
    _, i = msgs[f"/gt/{cam}/instances"][step]
    return np.frombuffer(d.data, "<f4").reshape(H, W), np.frombuffer(i.data, "<u2").reshape(H, W)


def tf_buffer(msgs) -> TransformBuffer:
    buf = TransformBuffer()
    for _, m in msgs["/tf_static"]:
        buf.add_message(m, static=True)
    for _, m in msgs["/tf"]:
        buf.add_message(m)
    return buf


def reproject(msgs, buf, src: tuple[str, int], dst: tuple[str, int], world_from: dict | None = None):
    """Unproject src's GT depth into the world, project into dst; agreement of depth and IDs there."""
    (cam_a, step_a), (cam_b, step_b) = src, dst
    poses = {}
    for cam, step in (src, dst):
        _, info = msgs[f"/{cam}/camera_info"][step]
        stamp = stamp_ns(info.header.stamp)
        pose = world_from[(cam, step)] if world_from else buf.lookup("odom", info.header.frame_id, stamp)
        poses[(cam, step)] = (info.k.reshape(3, 3), pose)
    (ka, pa), (kb, pb) = poses[src], poses[dst]
    depth_a, ids_a = depth_ids(msgs, cam_a, step_a)
    depth_b, ids_b = depth_ids(msgs, cam_b, step_b)
    v, u = np.mgrid[0:H, 0:W]
    rays = np.linalg.inv(ka) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    cam_pts = rays * depth_a.ravel()
    world = pa[:3, :3] @ cam_pts + pa[:3, 3:4]
    b_from_world = np.linalg.inv(pb)
    in_b = b_from_world[:3, :3] @ world + b_from_world[:3, 3:4]
    z = in_b[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (kb @ in_b)[:2] / z
    ub, vb = np.round(uv[0]).astype(int), np.round(uv[1]).astype(int)
    inside = (z > 0.05) & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
    ub, vb, z, src_ids = ub[inside], vb[inside], z[inside], ids_a.ravel()[inside]
    depth_ok = np.abs(depth_b[vb, ub] - z) < 0.02 * z + 0.01
    id_ok = ids_b[vb, ub][depth_ok] == src_ids[depth_ok]
    return inside.mean(), depth_ok.mean() if depth_ok.size else 0.0, id_ok.mean() if id_ok.size else 0.0, src_ids


@pytest.mark.parametrize("storage", list(CASES))
def test_ground_truth_reprojects_between_views(bags, storage):
    _, msgs = read_all(bags[storage])
    buf = tf_buffer(msgs)
    cams = cameras_of(storage)
    # the bag's TF chain gives exactly the renderer's camera poses
    case = CASES[storage]
    plan = plan_sequence(case["seed"], num_steps=FRAMES, cameras=case["cameras"], trajectory=case["trajectory"],
                         width=W, height=H)
    for step in range(FRAMES):
        for c, cam in enumerate(cams):
            np.testing.assert_allclose(buf.lookup("odom", f"{cam}_optical_frame", plan.stamps_ns[step]),
                                       plan.world_from_camera(step, c), atol=1e-9)
    # consecutive steps of one camera, and neighbouring cameras at the same step
    pairs = [((cams[0], s), (cams[0], s + 1)) for s in range(FRAMES - 1)]
    pairs += [((cams[c], s), (cams[c + 1], s)) for c in range(len(cams) - 1) for s in (0, FRAMES // 2)]
    agreeing = inside_total = 0.0
    checked = 0
    object_fraction = []
    for src, dst in pairs:
        inside, depth_ok, id_ok, src_ids = reproject(msgs, buf, src, dst)
        n_inside = inside * W * H
        if n_inside < 200:  # the views do not overlap enough to say anything
            continue
        checked += 1
        agreeing += depth_ok * n_inside
        inside_total += n_inside
        # where the surfaces agree, the instance IDs agree (only pixel-rounding at object edges differs)
        assert id_ok > 0.98, (src, dst, id_ok)
        object_fraction.append((src_ids > 0).mean())
    assert checked >= FRAMES // 2
    # occlusion between views explains the rest
    assert agreeing / inside_total > 0.8
    assert np.mean(object_fraction) > 0.05, "the views should show objects, not only the room"
    # control: with one camera's pose off by a few decimetres the depths stop agreeing, so the check can fail
    src, dst = pairs[-1]
    wrong = {src: buf.lookup("odom", f"{src[0]}_optical_frame", plan.stamps_ns[src[1]]),
             dst: buf.lookup("odom", f"{dst[0]}_optical_frame", plan.stamps_ns[dst[1]])}
    wrong[dst][:3, 3] += [0.3, -0.2, 0.1]
    _, depth_bad, _, _ = reproject(msgs, buf, src, dst, world_from=wrong)
    assert depth_bad < 0.5


@pytest.mark.parametrize("storage", list(CASES))
def test_gt_objects_follow_the_convention(bags, storage):
    _, msgs = read_all(bags[storage])
    cams = cameras_of(storage)
    objs = [m for _, m in msgs["/gt/objects"]]
    assert all(m.header.frame_id == "odom" for m in objs)
    seen_pixels: dict[int, int] = {}
    views: dict[int, int] = {}
    for step, m in enumerate(objs):
        step_pixels: dict[int, int] = {}
        for cam in cams:
            _, ids = depth_ids(msgs, cam, step)
            counts = np.bincount(ids.ravel())
            for obj_id in np.nonzero(counts)[0]:
                if obj_id:
                    step_pixels[int(obj_id)] = step_pixels.get(int(obj_id), 0) + int(counts[obj_id])
                    views[int(obj_id)] = views.get(int(obj_id), 0) + 1
        for inst in m.instances:
            assert inst.point_count == step_pixels.get(inst.id, 0)
            assert inst.views_seen == views.get(inst.id, 0)
            if inst.id in step_pixels:
                assert inst.state == STATE_CONFIRMED
            else:
                assert inst.state == (STATE_LOST if inst.id in views else STATE_TENTATIVE)
            attrs = {kv.key: kv.value for kv in inst.attributes}
            assert inst.label == f"{attrs['size']} {attrs['color']} {attrs['shape']}"
            assert inst.box_size.x > 0 and inst.box_size.z > 0
        seen_pixels.update(step_pixels)
    assert seen_pixels, "some object must be visible"
    # every object ID in the images is listed
    assert set(seen_pixels) <= {inst.id for inst in objs[-1].instances}


def test_existing_output_is_not_overwritten_without_the_flag(bags, capsys):
    path = bags["mcap"]
    assert main(["make-sample-bag", str(path), "--frames", "1", "--width", "56", "--height", "56"]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["make-sample-bag", str(path.parent / "other"), "--trajectory", "spiral"])
    assert "invalid choice: 'spiral'" in capsys.readouterr().err


def test_overwrite_replaces_a_bag(tmp_path):
    path = tmp_path / "bag"
    args = ["make-sample-bag", str(path), "--frames", "1", "--width", "56", "--height", "56"]
    assert main(args) == 0
    assert main([*args, "--overwrite", "--frames", "2"]) == 0
    _, msgs = read_all(path)
    assert len(msgs["/front/image_raw"]) == 2


def test_tf_can_start_late_and_drop_out(tmp_path, capsys):
    """--tf-start and --tf-gap leave /tf out as a robot's late or interrupted TF would; images stay."""
    path = tmp_path / "late"
    args = ["make-sample-bag", str(path), "--frames", "20", "--width", "56", "--height", "56", "--rate", "10",
            "--tf-start", "0.5", "--tf-gap", "1.0", "0.3"]
    assert main(args) == 0
    _, msgs = read_all(path)
    first = stamp_ns(msgs["/front/image_raw"][0][1].header.stamp)
    tf_times = [round((stamp_ns(m.transforms[0].header.stamp) - first) / 1e8) for _, m in msgs["/tf"]]
    assert tf_times == [5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19]  # tenths of a second
    assert len(msgs["/front/image_raw"]) == 20 and len(msgs["/tf_static"]) == 1
    assert main(["make-sample-bag", str(tmp_path / "bad"), "--frames", "2", "--tf-gap", "1", "0"]) == 2
    assert "positive durations" in capsys.readouterr().err


def _first_image(path: Path) -> np.ndarray:
    store = get_typestore(Stores.ROS2_JAZZY)
    with AnyReader([path], default_typestore=store) as reader:
        conn = next(c for c in reader.connections if c.topic.endswith("/image_raw"))
        _, _, raw = next(reader.messages(connections=[conn]))
        msg = reader.deserialize(raw, conn.msgtype)
        return np.asarray(msg.data).reshape(msg.height, msg.width, -1)


def test_sample_bags_take_the_benchmarks_scene_spec_including_its_look(tmp_path):
    """A sample bag is described by the same SceneSpec as the benchmark scenarios: the same scene and poses
    for the same fields, and a randomised look when the spec names one."""
    from dataclasses import asdict

    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
    from iggt_ros.train.evaluate import TRAIN_DOMAIN_SCENARIOS

    scene = TRAIN_DOMAIN_SCENARIOS[0].scene
    spec = SampleBagSpec(**{**asdict(scene), "frames": 2, "width": W, "height": H})
    bag_plan, scene_plan = spec.plan(), type(scene)(**{**asdict(scene), "frames": 2, "width": W, "height": H}).plan()
    assert bag_plan.stamps_ns == scene_plan.stamps_ns
    assert np.allclose(np.stack(bag_plan.world_from_base), np.stack(scene_plan.world_from_base))
    assert [o.shape for o in bag_plan.scene.objects] == [o.shape for o in scene_plan.scene.objects]
    write_sample_bag(tmp_path / "look", spec)
    write_sample_bag(tmp_path / "plain", SampleBagSpec(**{**asdict(spec), "domain": None, "duplicate_pairs": None}))
    looked, plain = _first_image(tmp_path / "look"), _first_image(tmp_path / "plain")
    assert looked.shape == plain.shape and np.abs(looked.astype(int) - plain.astype(int)).mean() > 5
