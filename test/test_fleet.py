"""Fleet evaluation: three small sample bags (one corrupt) replayed one after another and as tasks on a real
local Ray instance give the same reports and totals; failures are reported with their reason, retries are
bounded, a restarted run skips the bags already done; Ray stays out of the core package and the node."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iggt_ros import cli
from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
from iggt_ros.config import IggtConfig
from iggt_ros.fleet.bags import FleetInputError, find_bags, plan_jobs
from iggt_ros.fleet.evaluate import OUTCOME_JSON, FleetResult, evaluate_fleet
from iggt_ros.fleet.report import (
    FLEET_JSON,
    FLEET_MD,
    LATENCY_PLOT,
    TMIOU_PLOT,
    plot_fleet_latency,
    plot_fleet_tmiou,
)
from iggt_ros.fleet.runners import SerialRunner
from iggt_ros.fleet.task import ReplaySettings

W, H = 168, 112
SETTINGS = ReplaySettings(config=IggtConfig().replace(**{
    "engine.backend": "oracle", "input.image_width": W, "input.image_height": H,
    "clustering.min_instance_area_px": 20}))


def _corrupt(bag: Path) -> None:
    """Overwrite the data file: the bag keeps its metadata but no message can be read."""
    for f in bag.iterdir():
        if f.suffix == ".mcap":
            f.write_bytes(b"\x00not an mcap file\x00" * 64)


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("fleet_bags")
    paths = []
    for seed, name in enumerate(("kitchen", "office", "broken")):
        write_sample_bag(root / name, SampleBagSpec(seed=seed, frames=10, width=W, height=H, num_objects=4))
        paths.append(root / name)
    _corrupt(root / "broken")
    return paths


@pytest.fixture(scope="module")
def serial(bags, tmp_path_factory) -> FleetResult:
    out = tmp_path_factory.mktemp("fleet_serial")
    return evaluate_fleet(plan_jobs(find_bags(bags)), out, SETTINGS, SerialRunner(), progress=False)


def _outcomes(result: FleetResult) -> dict:
    return {o.name: o for o in result.outcomes}


def test_two_reports_and_one_clear_failure(serial, tmp_path):
    outcomes = _outcomes(serial)
    assert [o.status for o in serial.outcomes] == ["ok", "ok", "failed"]
    broken = outcomes["broken"]
    assert "no camera topics" in broken.reason and str(broken.input_bag) in broken.reason
    assert broken.attempts == 1 and not broken.retryable  # an unusable bag is not tried again
    for name in ("kitchen", "office"):
        o = outcomes[name]
        report = serial.out_dir / "bags" / name / o.report_dir
        assert json.loads((report / "metrics.json").read_text()) == o.metrics
        assert o.windows >= 1 and o.views >= 1 and o.metrics["instances"]["num_objects"] == 4
        assert (serial.out_dir / "bags" / name / OUTCOME_JSON).is_file()
    counts = serial.totals["counts"]
    assert (counts["bags"], counts["ok"], counts["failed"]) == (3, 2, 1)
    assert counts["objects"] == 8 and counts["views"] == sum(outcomes[n].views for n in ("kitchen", "office"))
    objects = [obj["t_miou"] for n in ("kitchen", "office") for obj in outcomes[n].metrics["instances"]["objects"]]
    assert serial.totals["quality"]["t_miou"] == pytest.approx(sum(objects) / len(objects))
    md = (serial.out_dir / FLEET_MD).read_text()
    assert "[report](bags/kitchen/report/summary.md)" in md and "no camera topics" in md
    for plot in (TMIOU_PLOT, LATENCY_PLOT):
        assert (serial.out_dir / plot).stat().st_size > 5000
    assert plot_fleet_tmiou(serial.outcomes, tmp_path / "objects.png") == 8  # every object of both reports
    assert plot_fleet_latency(serial.outcomes, tmp_path / "latency.png") == 2
    assert json.loads((serial.out_dir / FLEET_JSON).read_text())["totals"] == serial.totals


def test_ray_tasks_give_the_serial_run_s_reports_and_totals(bags, serial, tmp_path):
    ray = pytest.importorskip("ray")
    from iggt_ros.fleet.runners import RayRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = RayRunner("local", cpus_per_bag=1)
        assert runner.description.startswith("Ray (2 CPUs")
        result = evaluate_fleet(plan_jobs(find_bags(bags)), tmp_path, SETTINGS, runner, progress=False)
    finally:
        ray.shutdown()
    assert [o.status for o in result.outcomes] == [o.status for o in serial.outcomes]
    assert result.totals["counts"] == serial.totals["counts"]
    assert result.totals["quality"] == pytest.approx(serial.totals["quality"], rel=1e-9)
    for name, o in _outcomes(result).items():
        s = _outcomes(serial)[name]
        assert (o.images, o.windows, o.views, o.reason) == (s.images, s.windows, s.views, s.reason)
        if o.ok:
            assert o.metrics["instances"] == s.metrics["instances"]
            assert (tmp_path / "bags" / name / o.report_dir / "summary.md").is_file()


def test_a_restarted_run_replays_only_the_bags_not_done(bags, serial, tmp_path):
    out = tmp_path / "fleet"
    shutil.copytree(serial.out_dir, out)
    # as if interrupted while 'office' was replaying: its outcome was never written, a partial output is left
    (out / "bags" / "office" / OUTCOME_JSON).unlink()
    kept = (out / "bags" / "kitchen" / "report" / "metrics.json").stat().st_mtime_ns
    result = evaluate_fleet(plan_jobs(find_bags(bags)), out, SETTINGS, SerialRunner(), progress=False)
    outcomes = _outcomes(result)
    assert outcomes["kitchen"].reused and not outcomes["office"].reused and not outcomes["broken"].reused
    assert outcomes["office"].ok and outcomes["broken"].status == "failed"
    assert (out / "bags" / "kitchen" / "report" / "metrics.json").stat().st_mtime_ns == kept
    assert result.totals["counts"] | {"reused": 0} == serial.totals["counts"]
    assert result.totals["quality"] == pytest.approx(serial.totals["quality"], rel=1e-9)
    assert "ok (earlier run)" in (out / FLEET_MD).read_text()


def test_a_timed_out_bag_is_retried_a_bounded_number_of_times(bags, tmp_path):
    # a limit no replay can meet: the child process is still importing when it is stopped
    settings = ReplaySettings(config=SETTINGS.config, timeout_s=0.01)
    result = evaluate_fleet(plan_jobs(bags[:1]), tmp_path, settings, SerialRunner(), retries=2, progress=False)
    (o,) = result.outcomes
    assert o.status == "timeout" and o.attempts == 3 and "--timeout" in o.reason
    assert json.loads((tmp_path / "bags" / "kitchen" / OUTCOME_JSON).read_text())["status"] == "timeout"


def test_bags_are_found_in_folders_and_named_uniquely(tmp_path):
    for rel in ("site_a/run1", "site_b/run1", "site_b/nested/run2"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "drive.mcap").write_bytes(b"")
    (tmp_path / "out" / "bags" / "x" / "output").mkdir(parents=True)  # an earlier fleet's output bag
    (tmp_path / "out" / "bags" / "x" / "output" / "metadata.yaml").write_text("{}\n")
    found = find_bags([tmp_path, tmp_path / "site_a" / "run1"], exclude=tmp_path / "out")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "loose/drive.mcap", "site_a/run1", "site_b/nested/run2", "site_b/run1"]
    assert [j.name for j in plan_jobs(found)] == ["drive", "run1", "run2", "run1_2"]
    with pytest.raises(FleetInputError, match="does not exist"):
        find_bags([tmp_path / "missing"])
    with pytest.raises(FleetInputError, match="no bag under"):
        find_bags([tmp_path / "out"], exclude=tmp_path / "out")


def test_cli_reports_failures_in_its_exit_code(bags, tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nothing"), "-o", str(tmp_path / "o1")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["evaluate", str(bags[2]), "-o", str(tmp_path / "o2"), "--engine", "oracle", "--no-progress"]) == 1
    assert "no camera topics" in capsys.readouterr().err
    counts = json.loads((tmp_path / "o2" / FLEET_JSON).read_text())["totals"]["counts"]
    assert (counts["ok"], counts["failed"]) == (0, 1)


def test_ray_is_imported_by_the_fleet_runner_only():
    package = Path(__import__("iggt_ros").__file__).parent
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "ray" or n.startswith("ray.") for n in names):
                importers.append(path.relative_to(package).as_posix())
    assert importers == ["fleet/runners.py"]
    code = ("import sys, iggt_ros.cli, iggt_ros.apps.replay, iggt_ros.perception.pipeline, iggt_ros.fleet.cli\n"
            "try:\n    import iggt_ros.ros.node\nexcept ImportError:\n    pass\n"
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
