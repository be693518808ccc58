"""Set up Backend's failure paths (blender_addon/setup/environment.py) with a fake installer standing in
for the base Python, pip and uv (tests/fake_installer.py): a failed or cancelled set-up leaves the
previous working environment or nothing, and its message says what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from blender_addon.errors import UserError
from blender_addon.setup import device as device_detect
from blender_addon.setup import environment as backend_setup
from blender_addon.setup import plan as setup_plan
from tests.conftest import ROOT

FAKE = Path(__file__).resolve().parent / "fake_installer.py"
BUILD = device_detect.cpu_build("test", "linux")
INDEXES = setup_plan.Indexes("https://torch.example/cpu", "https://pypi.example/simple")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A venv without pip whose `pip` is the fake installer (made once: copying it is instant)."""
    venv = tmp_path_factory.mktemp("template") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    shutil.copy(FAKE, site / "pip" / "__main__.py")
    return venv


class Fake:
    """Runs set-ups in tmp_path with the fake installer; `mode` picks how the installer behaves."""

    def __init__(self, tmp_path: Path, template: Path):
        self.folder = tmp_path
        self.script = tmp_path / "fake"
        self.script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.script.chmod(0o755)
        self.environment = backend_setup.BackendEnvironment(tmp_path / "user" / "backend-venv")
        self.env = {**os.environ, "FAKE_TEMPLATE": str(template), "FAKE_PID_FILE": str(tmp_path / "pid"),
                    "FAKE_SITE": sysconfig.get_paths()["purelib"]}

    def start(self, mode: str, installer: str = "uv", uv: str | None = "fake"):
        self.env["FAKE_INSTALLER"] = mode
        uv = str(self.script) if uv == "fake" else uv
        return backend_setup.start_setup(self.environment, str(self.script), ROOT, BUILD, INDEXES,
                                         installer=installer, uv=uv, env=self.env)

    def setup(self, mode: str, **kw):
        run = self.start(mode, **kw)
        run.join(120)
        assert run.finished
        return run

    def works(self) -> bool:
        """The environment in place runs the backend (its packages are there)."""
        python = self.environment.python
        return python.exists() and subprocess.run([str(python), "-m", "backend", "--version"], cwd=ROOT,
                                                  capture_output=True).returncode == 0

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.environment.target.parent.iterdir() if p.name != "setup.log")


@pytest.fixture
def fake(tmp_path, template) -> Fake:
    return Fake(tmp_path, template)


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_set_up_builds_beside_the_target_and_moves_in_when_checked(fake, installer):
    run = fake.setup("ok", installer=installer)
    assert run.error is None and fake.works() and fake.leftovers() == ["backend-venv"]
    state = fake.environment.state()
    assert state["installer"] == installer and state["build"] == BUILD.describe()
    assert state["stamp"] == setup_plan.plan_stamp(ROOT, BUILD)
    assert fake.environment.is_current(setup_plan.plan_stamp(ROOT, BUILD))
    log = fake.environment.log.read_text()
    assert "backend-venv.partial" in log and "Successfully installed" in log  # built in the staging folder
    assert "https://torch.example/cpu" in log and "https://pypi.example/simple" in log  # the configured indexes
    if installer == "uv":  # uv was handed pip's configuration (the environment's find-links win)
        assert "uv settings: UV_EXTRA_INDEX_URL=file:///opt/a/simple file:///opt/b/simple, UV_FIND_LINKS=" \
               "/env/wheels, UV_INDEX_STRATEGY=unsafe-best-match, UV_INDEX_URL=https://mirror.example/simple" in log


def test_network_error_halfway_on_a_first_set_up_leaves_nothing(fake):
    run = fake.setup("network")
    assert "A package index could not be reached or lacks a package" in run.error
    assert "Installing diffusers, transformers and the rest failed (exit code 1)" in run.error
    assert "Nothing was left behind." in run.error and "Check the internet connection" in run.error
    assert run.error.endswith(f"Log: {fake.environment.log}")
    assert fake.leftovers() == [] and "Network is unreachable" in fake.environment.log.read_text()


def test_network_error_keeps_the_previous_environment_working(fake):
    fake.setup("ok")
    before = fake.environment.state()
    time.sleep(1.1)  # a new state would record another time
    run = fake.setup("network")
    assert "The previous backend is still in place." in run.error
    assert fake.works() and fake.environment.state() == before and fake.leftovers() == ["backend-venv"]


def test_a_full_disk_says_how_much_to_free(fake):
    fake.setup("ok")
    run = fake.setup("disk_full")
    assert run.error.startswith("The disk is full (Installing torch failed (exit code 1)")
    assert f"Free at least 3 GB in {fake.environment.target.parent}" in run.error
    assert "The previous backend is still in place." in run.error
    assert fake.works() and fake.leftovers() == ["backend-venv"]  # the partial file went with its folder


def test_cancel_mid_install_stops_the_installer_and_keeps_the_previous_environment(fake):
    fake.setup("ok")
    run = fake.start("hang")
    pid_file = fake.folder / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.package == "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (191.8 MB)"
    assert run.progress_text().startswith("Step 3 of 5: Installing torch · torch-2.13.0")
    run.cancel()
    run.join(30)
    assert run.error.startswith("Set-up cancelled. The previous backend is still in place.")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert fake.works() and fake.leftovers() == ["backend-venv"]


def test_cancel_on_a_first_set_up_leaves_nothing(fake):
    run = fake.start("hang")
    while not (fake.folder / "pid").exists():
        time.sleep(0.05)
    run.cancel()
    run.join(30)
    assert "Nothing was left behind." in run.error and fake.leftovers() == []


def test_without_uv_the_set_up_goes_on_with_pip(fake):
    run = fake.setup("no_uv", uv=None)
    assert run.error is None and fake.works()
    assert "Installing uv (a faster installer) failed (exit code 1); going on without it" in run.lines
    assert [s.label for s in run.steps][2:] == ["Installing torch", "Installing diffusers, transformers and the rest",
                                               "Checking the backend"]
    assert all(" -m pip install" in " ".join(s.argv) for s in run.steps[2:4])


def test_an_interrupted_set_up_is_undone_before_the_next_one(fake):
    fake.setup("ok")
    env = fake.environment
    os.replace(env.target, env.previous)  # Blender died between the two renames of a swap
    env.staging.mkdir()
    (env.staging / "half").write_text("x")
    env.recover()
    assert fake.works() and fake.leftovers() == ["backend-venv"]
    env.staging.mkdir()  # a partial build beside a good environment: dropped, then built again
    run = fake.setup("ok")
    assert run.error is None and fake.works() and fake.leftovers() == ["backend-venv"]


def test_too_little_disk_space_stops_before_anything_starts(fake):
    def disk_usage(path):
        return shutil._ntuple_diskusage(100 * setup_plan.GB, 99 * setup_plan.GB, setup_plan.GB)

    with pytest.raises(UserError, match="Not enough disk space") as e:
        fake.environment.check_space("cpu", disk_usage=disk_usage)
    assert "Needs about 3 GB free; 1.0 GB free in" in str(e.value) and "free some space" in e.value.hint
    assert fake.environment.space_note("cuda", disk_usage).startswith("Needs about 10 GB free; 1.0 GB free")
    assert not fake.environment.target.parent.exists()


def test_remove_deletes_the_environment_and_leftovers(fake):
    fake.setup("ok")
    fake.environment.staging.mkdir()
    assert fake.environment.remove() is True
    assert fake.leftovers() == [] and fake.environment.remove() is False
