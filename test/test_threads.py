"""The thread policy: what reaches the libraries at load, what changes at run time, who may override it.

The libraries read most of the policy once, when they load, so the decisive tests start a fresh Python
process, apply the policy the way an entry point does and ask the libraries themselves (threadpoolctl,
torch) what they run with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from iggt_ros import threads
from iggt_ros.config import ConfigError, IggtConfig, ThreadsConfig, save_config

THREAD_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS")


LIBRARY_PROBE = """
    import json, os
    import numpy, torch
    from threadpoolctl import threadpool_info
    blas = sorted({i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"})
    print(json.dumps({"openblas": blas, "torch": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}))
"""


def fresh_process(setup: str, environ: dict[str, str] | None = None) -> dict:
    """Runs `setup`, then the library probe, in a new interpreter without any thread variable of this shell;
    returns what the probe printed."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update(environ or {})
    code = textwrap.dedent(setup) + textwrap.dedent(LIBRARY_PROBE)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])




def test_the_cli_applies_the_config_files_policy_before_the_libraries_load(tmp_path):
    config = tmp_path / "threads.yaml"
    save_config(IggtConfig().replace(**{"threads.torch": 1, "threads.openblas": 2}), config)
    seen = fresh_process(f"""
        from iggt_ros.cli import prepare_threads
        prepare_threads(["--config", {str(config)!r}])
    """)
    assert seen == {"openblas": [2], "torch": 1, "wait": "PASSIVE"}
    # without a file, the defaults: one BLAS thread, one PyTorch thread
    seen = fresh_process("""
        from iggt_ros.cli import prepare_threads
        prepare_threads([])
    """)
    assert seen == {"openblas": [1], "torch": 1, "wait": "PASSIVE"}


def test_variables_the_user_sets_win_over_the_policy():
    seen = fresh_process("""
        from iggt_ros.threads import prepare_process
        prepare_process()
    """, {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_NUM_THREADS": "2"})
    assert seen == {"openblas": [2], "torch": 1, "wait": "ACTIVE"}
    environ = {"OPENBLAS_NUM_THREADS": "3"}
    applied = threads.prepare_process(ThreadsConfig(), environ)
    assert environ["OPENBLAS_NUM_THREADS"] == "3" and "OPENBLAS_NUM_THREADS" not in applied
    assert environ["OMP_WAIT_POLICY"] == applied["OMP_WAIT_POLICY"] == "PASSIVE"


def test_zero_counts_mean_the_share_the_process_was_given():
    assert threads.cpu_share({"IGGT_CPU_SHARE": "1"}) == 1, "a launcher such as Ray sized the process"
    assert threads.cpu_share({}) == threads.available_cpus()
    assert threads.cpu_share({"IGGT_CPU_SHARE": "many"}) == threads.available_cpus()
    assert threads.cpu_share({"OMP_NUM_THREADS": "1"}) == threads.available_cpus(), "the policy's own variable"
    counts = threads.resolve(ThreadsConfig(torch=0, pixel=3), cpus=5)
    assert (counts.torch, counts.pixel, counts.openblas, counts.torch_interop) == (5, 3, 1, 1)
    env = threads.environment(ThreadsConfig(torch=2), cpus=4)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2", "NUMBA_NUM_THREADS": "4",
                   "OPENBLAS_NUM_THREADS": "1"}


def test_runtime_application_sets_openblas_and_torch_whatever_they_were():
    import torch
    from threadpoolctl import ThreadpoolController, threadpool_info

    def openblas() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"}

    original = ThreadpoolController().select(internal_api="openblas").info()
    torch_before = torch.get_num_threads()
    try:
        threads.apply_runtime(ThreadsConfig(openblas=2, torch=1))
        assert openblas() == {2} and torch.get_num_threads() == 1
        threads.apply_runtime(ThreadsConfig(openblas=1, torch=2))
        assert openblas() == {1} and torch.get_num_threads() == 2
        line = threads.describe(ThreadsConfig(openblas=1, torch=2))
        assert "OpenBLAS 1" in line and "torch 2" in line
    finally:
        for lib in original:
            ThreadpoolController().select(filepath=lib["filepath"]).limit(limits=lib["num_threads"])
        torch.set_num_threads(torch_before)


def test_describe_says_when_the_environment_makes_threads_spin(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "in force: OMP_WAIT_POLICY=ACTIVE" in threads.describe(ThreadsConfig())
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert "in force: OMP_WAIT_POLICY" not in threads.describe(ThreadsConfig())


def test_onnxruntime_sessions_get_the_counts_and_do_not_spin():
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    threads.onnxruntime_options(ThreadsConfig(onnxruntime=1, onnxruntime_interop=1), options)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    threads.onnxruntime_options(ThreadsConfig(onnxruntime=0), options)
    assert options.intra_op_num_threads == threads.cpu_share()


def test_policy_from_argv_reads_the_config_option_in_both_spellings(tmp_path):
    config = tmp_path / "c.yaml"
    save_config(IggtConfig().replace(**{"threads.pixel": 1}), config)
    assert threads.policy_from_argv(["in.bag", "--config", str(config)]).pixel == 1
    assert threads.policy_from_argv([f"--config={config}"]).pixel == 1
    assert threads.policy_from_argv(["in.bag"]) == ThreadsConfig()
    # an unreadable file is the command's to report; the policy falls back to its defaults meanwhile
    assert threads.policy_from_argv(["--config", str(tmp_path / "missing.yaml")]) == ThreadsConfig()


def test_thread_settings_live_in_one_section_and_old_keys_say_where_they_went():
    with pytest.raises(ConfigError, match=r"'clustering.threads' is now 'threads.pixel'"):
        IggtConfig.from_dict({"clustering": {"threads": 1}})
    with pytest.raises(ConfigError, match=r"'clustering.openblas_threads' is now 'threads.openblas'"):
        IggtConfig.from_dict({"clustering": {"openblas_threads": 1}})
    with pytest.raises(ConfigError, match="threads.torch"):
        IggtConfig.from_dict({"threads": {"torch": -1}})


def test_launch_passes_the_policy_as_parameters_and_environment(tmp_path):
    from iggt_ros.ros.launch_logic import thread_setup

    config = tmp_path / "robot.yaml"
    save_config(IggtConfig().replace(**{"threads.torch": 1, "threads.openblas": 1}), config)
    params, env = thread_setup(str(config), {"torch_threads": "", "pixel_threads": "2"}, environ={})
    assert params == {"threads.pixel": 2}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["OMP_NUM_THREADS"] == "1" and env["NUMBA_NUM_THREADS"] == "2"
    params, env = thread_setup(str(config), {"torch_threads": "2"}, environ={"OMP_WAIT_POLICY": "ACTIVE"})
    assert params == {"threads.torch": 2}
    assert "OMP_WAIT_POLICY" not in env, "the launching shell's own setting wins, as without launch"
    assert env["OMP_NUM_THREADS"] == "2"
    with pytest.raises(ValueError, match="torch_threads:='two' must be an integer"):
        thread_setup(str(config), {"torch_threads": "two"}, environ={})
    with pytest.raises(ConfigError, match="threads.pixel"):
        thread_setup(str(config), {"pixel_threads": "-2"}, environ={})


def test_the_first_window_reports_the_cold_start_from_configure():
    from iggt_ros.ros.runtime_stats import RuntimeStats

    now = [10.0]
    stats = RuntimeStats("oracle", clock=lambda: now[0], started=4.0)
    assert "configure_to_first_window_s" not in stats.report().values
    stats.record_window({"inference": 5.0})
    now[0] = 20.0
    stats.record_window({"inference": 5.0})
    assert stats.report().values["configure_to_first_window_s"] == "6.00", "measured at the first window only"


def test_ray_workers_get_the_policy_sized_to_one_bags_cpus():
    from iggt_ros.fleet.runners import _worker_env

    env = _worker_env(1.0)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["NUMBA_NUM_THREADS"] == "1"
    share = threads.cpu_share(env)
    assert share == 1 and threads.resolve(ThreadsConfig(), cpus=share).pixel == 1, \
        "a bag's 'every CPU' is its task's CPUs, not the machine's"
