"""Set up backend (blender_addon/backend_setup.py): the plan, and running it with progress."""

from __future__ import annotations

import shlex
import sys

import tomllib

from blender_addon import backend_setup
from tests.conftest import ROOT


def test_plan_installs_the_pinned_torch_then_the_declared_dependencies(tmp_path):
    steps = backend_setup.setup_steps("/blender/python", tmp_path / "venv", ROOT, device="cpu", platform="linux")
    create, torch, rest, check = (s.argv for s in steps)
    assert create == ("/blender/python", "-m", "venv", str(tmp_path / "venv"))
    venv_py = str(tmp_path / "venv" / "bin" / "python")
    pinned = backend_setup.pinned_version("torch", ROOT / "constraints.txt")
    assert pinned and f"torch=={pinned}" in torch and torch[0] == venv_py
    assert torch[-2:] == ("--index-url", backend_setup.TORCH_CPU_INDEX)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(rest) >= {d for d in declared if not d.startswith("torch")}
    assert ("-c", str(ROOT / "constraints.txt")) == rest[rest.index("-c"):rest.index("-c") + 2]
    assert check == (venv_py, "-m", "backend", "--version") and steps[-1].cwd == str(ROOT)


def test_plan_for_windows_and_gpus():
    steps = backend_setup.setup_steps("py.exe", "C:/tv/venv", ROOT, device="cuda", platform="win32")
    assert steps[1].argv[0].replace("\\", "/") == "C:/tv/venv/Scripts/python.exe"
    assert steps[1].argv[-1] == backend_setup.TORCH_CUDA_INDEX
    linux_gpu = backend_setup.setup_steps("python3", "/v", ROOT, device="auto", platform="linux")
    assert "--index-url" not in linux_gpu[1].argv


def test_manual_instructions_are_the_same_commands(tmp_path):
    steps = backend_setup.setup_steps("/opt/blender python", tmp_path / "my venv", ROOT, platform="linux")
    lines = backend_setup.manual_instructions(steps).splitlines()
    assert [tuple(shlex.split(line)) for line in lines[:-1]] == [s.argv for s in steps[:-1]]
    assert shlex.split(lines[-1]) == ["cd", str(ROOT), "&&", *steps[-1].argv]


def test_run_reports_progress_and_creates_the_environment(tmp_path):
    venv = tmp_path / "venv"
    steps = [
        backend_setup.Step("Creating the virtual environment", (sys.executable, "-m", "venv", "--without-pip",
                                                               str(venv))),
        backend_setup.Step("Checking", (str(backend_setup.venv_python(venv)), "-c", "print('hello from venv')")),
    ]
    run = backend_setup.SetupRun(steps).start()
    run.join(60)
    assert run.finished and run.error is None
    assert run.index == 2 and run.fraction == 1.0 and run.label == "Done"
    assert run.last_line == "hello from venv"
    assert backend_setup.venv_python(venv).exists()


def test_a_failing_step_stops_the_run_and_says_which(tmp_path):
    marker = tmp_path / "never"
    steps = [
        backend_setup.Step("Installing torch", (sys.executable, "-c", "import sys; print('no space left'); "
                                                                      "sys.exit(3)")),
        backend_setup.Step("Next", (sys.executable, "-c", f"open({str(marker)!r}, 'w')")),
    ]
    run = backend_setup.SetupRun(steps).start()
    run.join(60)
    assert run.finished and run.index == 0
    assert run.error == "Installing torch failed (exit code 3): no space left"
    assert not marker.exists()


def test_cancel_stops_the_running_command(tmp_path):
    marker = tmp_path / "never"
    steps = [
        backend_setup.Step("Waiting", (sys.executable, "-c", "import time; print('started', flush=True); "
                                                             "time.sleep(60)")),
        backend_setup.Step("Next", (sys.executable, "-c", f"open({str(marker)!r}, 'w')")),
    ]
    run = backend_setup.SetupRun(steps).start()
    while run.last_line != "started" and not run.finished:
        run.join(0.05)
    run.cancel()
    run.join(30)
    assert run.finished and run.error == "cancelled" and not marker.exists()
