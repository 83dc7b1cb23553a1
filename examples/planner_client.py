"""A planner's view of /iggt/query: ask for an object by name, get its box in base_link, plan a pre-grasp.

    ros2 run ... or:  python examples/planner_client.py "the red cube" --frame base_link --standoff 0.10

It calls the node's query service over DDS like any manipulation planner would, with
`target_frame` set so the box comes back in the planner's frame (TF at the map's stamp), and
prints the answer, how the text was understood, and a pre-grasp pose: above the box top by a
stand-off, gripper pointing down (z axis along -z of the frame), yawed with the box.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass


@dataclass
class PreGrasp:
    """A pre-grasp pose in `frame`: position (m) and orientation quaternion (x, y, z, w)."""

    frame: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    instance_id: int
    score: float
    understood: str


def box_yaw(q) -> float:
    """Yaw of a gravity-aligned box pose's quaternion."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def pre_grasp(instance, frame: str, standoff: float, score: float, understood: str) -> PreGrasp:
    """Above the box top by `standoff`, approaching straight down, fingers across the box's shorter side."""
    p, size = instance.box_pose.position, instance.box_size
    yaw = box_yaw(instance.box_pose.orientation)
    if size.x > size.y:  # close the fingers across the narrower side
        yaw += math.pi / 2
    # Rotation: pi about x (tool z down), then yaw about the frame's z.
    half = yaw / 2.0
    orientation = (math.cos(half), math.sin(half), 0.0, 0.0)  # (x, y, z, w) of Rz(yaw) * Rx(pi)
    return PreGrasp(frame, (p.x, p.y, p.z + size.z / 2.0 + standoff), orientation, int(instance.id), score,
                    understood)


def ask(node, text: str, frame: str = "base_link", standoff: float = 0.10, timeout_s: float = 10.0,
        service: str = "/iggt/query") -> PreGrasp:
    """Ask the node through `node` (any rclpy node spinning in an executor); raises with the node's reason."""
    import time

    from iggt_ros.srv import Query

    client = node.create_client(Query, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise RuntimeError(f"{service} is not available; is the iggt node active?")
        future = client.call_async(Query.Request(text=text, max_results=1, target_frame=frame))
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} did not answer within {timeout_s} s")
            time.sleep(0.01)
        response = future.result()
    finally:
        node.destroy_client(client)
    if not response.success:
        raise RuntimeError(f"query '{text}' failed: {response.message}")
    if not response.instances:
        raise RuntimeError(f"query '{text}' matched nothing: {response.message}")
    return pre_grasp(response.instances[0], response.instances[0].header.frame_id, standoff,
                     float(response.scores[0]), response.understood)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("text", nargs="?", default="the red cube")
    ap.add_argument("--frame", default="base_link")
    ap.add_argument("--standoff", type=float, default=0.10, help="metres above the box top")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("iggt_planner_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        grasp = ask(node, args.text, args.frame, args.standoff, args.timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    print(f"instance {grasp.instance_id} (score {grasp.score:.3f}); understood: {grasp.understood}")
    x, y, z = grasp.position
    qx, qy, qz, qw = grasp.orientation
    print(f"pre-grasp in {grasp.frame}: position ({x:.3f}, {y:.3f}, {z:.3f}) m, "
          f"orientation (x {qx:.3f}, y {qy:.3f}, z {qz:.3f}, w {qw:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
