"""Set up backend: the plan (blender_addon/setup/plan.py), and running it with progress (setup/runner.py)."""

from __future__ import annotations

import shlex
import sys

import pytest
import tomllib

from blender_addon.errors import UserError
from blender_addon.setup import device as device_detect
from blender_addon.setup import plan as setup_plan
from blender_addon.setup import runner as setup_runner
from tests.conftest import ROOT

CPU = device_detect.cpu_build("test", "linux")
CUDA_WIN = device_detect.choose_build("cuda", "win32", nvidia=lambda: ([device_detect.Gpu("RTX", "576.02")], ""))
MPS = device_detect.choose_build("auto", "darwin", "arm64")


def plan(build=CPU, venv="/v", installer="pip", platform="linux", base="python3", **kw):
    return setup_plan.setup_steps(base, venv, ROOT, setup_plan.resolve_indexes(build, environ={}),
                                  installer=installer, platform=platform, **kw)


def test_plan_installs_the_pinned_torch_then_the_declared_dependencies(tmp_path):
    steps = plan(venv=tmp_path / "venv", base="/blender/python")
    create, torch, rest, check = (s.argv for s in steps)
    assert create == ("/blender/python", "-m", "venv", str(tmp_path / "venv"))
    venv_py = str(tmp_path / "venv" / "bin" / "python")
    pinned = setup_plan.pinned_version("torch", ROOT / "constraints.txt")
    assert pinned and f"torch=={pinned}" in torch and torch[0] == venv_py
    assert torch[-2:] == ("--index-url", device_detect.TORCH_CPU_INDEX)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(rest) >= {d for d in declared if not d.startswith("torch")}
    assert ("-c", str(ROOT / "constraints.txt")) == rest[rest.index("-c"):rest.index("-c") + 2]
    assert rest[-2:] == ("--index-url", setup_plan.PYPI)  # the rest from PyPI unless told otherwise
    assert check == (venv_py, "-m", "backend", "--version") and steps[-1].cwd == str(ROOT)


def test_plan_for_windows_and_gpus():
    steps = plan(CUDA_WIN, venv="C:/tv/venv", platform="win32", base="py.exe")
    assert steps[1].argv[0].replace("\\", "/") == "C:/tv/venv/Scripts/python.exe"
    assert steps[1].argv[-1] == device_detect.TORCH_CUDA_INDEX.format(tag="cu128")
    mac = plan(MPS, platform="darwin")  # torch's macOS build (Metal) is PyPI's
    assert mac[1].argv[-2:] == ("--index-url", setup_plan.PYPI)


def test_indexes_come_from_the_environment_then_the_preferences_then_the_defaults():
    assert setup_plan.resolve_indexes(CPU, environ={}) == setup_plan.Indexes(device_detect.TORCH_CPU_INDEX,
                                                                              setup_plan.PYPI)
    prefs = setup_plan.resolve_indexes(CPU, "https://mirror/torch", "default", environ={})
    assert prefs == setup_plan.Indexes("https://mirror/torch", None)
    env = {setup_plan.ENV_TORCH_INDEX: "DEFAULT", setup_plan.ENV_INDEX: "file:///srv/simple"}
    assert setup_plan.resolve_indexes(CPU, "https://mirror/torch", "", environ=env) == setup_plan.Indexes(
        None, "file:///srv/simple")
    with pytest.raises(UserError, match="Package Index is not a package index URL") as e:
        setup_plan.resolve_indexes(CPU, "", "pypi.org", environ={})
    assert "default" in e.value.hint
    # `default` passes no index to the installer: it uses its own configuration.
    steps = setup_plan.setup_steps("py", "/v", ROOT, setup_plan.Indexes(None, None), platform="linux")
    assert not any("--index-url" in s.argv for s in steps)


def test_uv_plan_installs_uv_with_pip_as_the_fallback_and_hands_it_pips_configuration():
    steps = plan(installer="uv")
    labels = [s.label for s in steps]
    assert labels[1:3] == ["Installing uv (a faster installer)", "Reading pip's index configuration for uv"]
    get_uv, config, torch, rest = steps[1:5]
    assert get_uv.argv[:4] == ("/v/bin/python", "-m", "pip", "install") and "uv" in get_uv.argv
    assert [s.argv for s in get_uv.fallback] == [s.argv for s in plan()[1:]]  # the pip plan
    assert config.argv == ("/v/bin/python", "-m", "pip", "config", "list") and config.env_from_output
    assert torch.argv[:6] == ("/v/bin/python", "-m", "uv", "pip", "install", "--python")
    assert rest.argv[-2:] == ("--index-url", setup_plan.PYPI)
    on_path = plan(installer="uv", uv="/usr/bin/uv")
    assert on_path[2].argv[:3] == ("/usr/bin/uv", "pip", "install") and len(on_path) == len(steps) - 1


def test_pip_configuration_becomes_uvs_environment():
    output = """:env:.find-links='/opt/wheels /more/wheels'
:env:.default-timeout='180'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/ignored/because/env/wins'
install.no-index='false'
download.index-url='https://only-for-pip-download/simple'
"""
    env = setup_plan.uv_env_from_pip_config(output, environ={})
    assert env == {"UV_FIND_LINKS": "/opt/wheels,/more/wheels", "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                   "UV_CONSTRAINT": "/etc/xdg/pip/constraints.txt",
                   "UV_EXTRA_INDEX_URL": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
                   "UV_INDEX_STRATEGY": "unsafe-best-match"}
    mine = {"UV_EXTRA_INDEX_URL": "https://mine/simple", "UV_INDEX_STRATEGY": "first-index"}
    assert setup_plan.uv_env_from_pip_config(output, environ=mine).keys() == {
        "UV_FIND_LINKS", "SSL_CERT_FILE", "UV_CONSTRAINT"}  # uv's own settings win
    assert setup_plan.uv_env_from_pip_config("global.index-url='https://m/simple'\ninstall.no-index='yes'",
                                             environ={"UV_INDEX_STRATEGY": "x"}) == {
        "UV_INDEX_URL": "https://m/simple", "UV_NO_INDEX": "1"}


def test_manual_instructions_are_the_same_commands(tmp_path):
    steps = plan(venv=tmp_path / "my venv", base="/opt/blender python")
    lines = setup_plan.manual_instructions(steps).splitlines()
    assert [tuple(shlex.split(line)) for line in lines[:-1]] == [s.argv for s in steps[:-1]]
    assert shlex.split(lines[-1]) == ["cd", str(ROOT), "&&", *steps[-1].argv]


def test_stamp_changes_with_the_build_and_the_pins():
    assert setup_plan.plan_stamp(ROOT, CPU) == setup_plan.plan_stamp(ROOT, device_detect.cpu_build("x"))
    assert setup_plan.plan_stamp(ROOT, CPU) != setup_plan.plan_stamp(ROOT, CUDA_WIN)


def test_run_reports_progress_and_creates_the_environment(tmp_path):
    venv = tmp_path / "venv"
    steps = [
        setup_plan.Step("Creating the virtual environment", (sys.executable, "-m", "venv", "--without-pip",
                                                            str(venv))),
        setup_plan.Step("Checking", (str(setup_plan.venv_python(venv)), "-c", "print('hello from venv')")),
    ]
    run = setup_runner.SetupRun(steps, log_path=tmp_path / "setup.log").start()
    run.join(60)
    assert run.finished and run.error is None
    assert run.index == 2 and run.fraction == 1.0 and run.label == "Done"
    assert run.last_line == "hello from venv"
    assert setup_plan.venv_python(venv).exists()
    log = (tmp_path / "setup.log").read_text()
    assert f"$ {shlex.join(steps[0].argv)}" in log and "hello from venv" in log
    assert log.splitlines()[-1].startswith("== set-up finished after")


def test_progress_names_the_package_and_counts_the_bytes_installers_report():
    run = setup_runner.SetupRun([setup_plan.Step("Installing torch", ("x",)), setup_plan.Step("b", ("y",))])
    assert run.progress_text() == "Step 1 of 2: Installing torch"
    for line in ["Collecting torch==2.13.0",
                 "  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (191.8 MB)",
                 "Downloading scipy (35.2MiB)"]:
        run._note(line, None)
    assert run.package == "scipy (35.2MiB)"
    assert run.downloaded == 191_800_000 + int(35.2 * 1024 ** 2)
    assert run.progress_text() == "Step 1 of 2: Installing torch · scipy (35.2MiB) · 228.7 MB downloaded"
    run._note("Installing collected packages: a, b, c", None)
    assert run.package == "installing 3 packages"
    run._note("Prepared 12 packages in 3.1s", None)  # uv
    assert run.package == "Prepared 12 packages"
    assert setup_runner.size_in_bytes("2.5 kB") == 2500 and setup_runner.size_in_bytes("1GiB") == 1024 ** 3


def test_a_failing_step_stops_the_run_and_says_which(tmp_path):
    marker = tmp_path / "never"
    steps = [
        setup_plan.Step("Installing torch", (sys.executable, "-c", "import sys; print('no space left'); "
                                                                   "sys.exit(3)")),
        setup_plan.Step("Next", (sys.executable, "-c", f"open({str(marker)!r}, 'w')")),
    ]
    run = setup_runner.SetupRun(steps).start()
    run.join(60)
    assert run.finished and run.index == 0
    assert run.error == "Installing torch failed (exit code 3): no space left"
    assert not marker.exists()


def test_a_failing_step_with_a_fallback_goes_on_with_it_and_output_can_set_the_environment(tmp_path):
    marker = tmp_path / "fallback"
    steps = [
        setup_plan.Step("Config", (sys.executable, "-c", "print('A=1')"),
                        env_from_output=lambda out: dict([out.strip().split("=")])),
        setup_plan.Step("Optional", (sys.executable, "-c", "raise SystemExit(1)"), fallback=(
            setup_plan.Step("Instead", (sys.executable, "-c", f"import os; open({str(marker)!r}, 'w')"
                                                              ".write(os.environ['A'])")),)),
        setup_plan.Step("Dropped", (sys.executable, "-c", "raise SystemExit(5)")),
    ]
    run = setup_runner.SetupRun(steps).start()
    run.join(60)
    assert run.error is None and marker.read_text() == "1"
    assert [s.label for s in run.steps] == ["Config", "Optional", "Instead"]


def test_cancel_stops_the_running_command(tmp_path):
    marker = tmp_path / "never"
    steps = [
        setup_plan.Step("Waiting", (sys.executable, "-c", "import time; print('started', flush=True); "
                                                          "time.sleep(60)")),
        setup_plan.Step("Next", (sys.executable, "-c", f"open({str(marker)!r}, 'w')")),
    ]
    run = setup_runner.SetupRun(steps).start()
    while run.last_line != "started" and not run.finished:
        run.join(0.05)
    run.cancel()
    run.join(30)
    assert run.finished and run.error == "cancelled" and not marker.exists()
