"""The Backend Command's start options and start failures, without a server (the real ssh link is
tests/test_ssh_remote.py, slow): options appended to an ssh command survive a real shell's word
splitting; ssh's destination is found among its options; stop() is not undone by a request that
waited for a start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import BackendConfig, runs_over_ssh
from blender_addon.connection.start_failure import INTERPRETER_FAILURES, SSH_CAUSES, classify, ssh_host
from blender_addon.errors import UserError
from tests.conftest import ROOT
from tests.sshd import descendants, process_name

ODD = "/srv/models dir/it's $HOME; `touch x` \"q\" & | > ü\\n"


def test_options_appended_to_ssh_reach_the_remote_command_as_they_were():
    config = BackendConfig(remote_command="ssh -p 2222 gpu-box /opt/tv/.venv/bin/python -m backend serve --remote",
                           base=ODD, ip_adapter="a b", device="cuda:1", allow_pickle=True)
    argv = config.command()
    assert argv[:4] == ["ssh", "-p", "2222", "gpu-box"]
    # What ssh does with the rest: join it with spaces for the remote shell, which splits it again.
    remote_line = " ".join(argv[5:])
    shell = subprocess.run(["sh", "-c", f"printf '%s\\0' {remote_line}"], capture_output=True, check=True)
    assert shell.stdout.decode().split("\0")[:-1] == ["-m", "backend", "serve", "--remote", "--base", ODD,
                                                      "--ip-adapter", "a b", "--device", "cuda:1", "--allow-pickle"]


def test_options_of_a_local_command_stay_separate_arguments():
    config = BackendConfig(remote_command="unshare -m sh -c 'exec python -m backend serve \"$@\"' sh", base=ODD)
    assert config.command()[-2:] == ["--base", ODD]
    assert BackendConfig(python="/venv/bin/python", base=ODD).command()[-2:] == ["--base", ODD]


@pytest.mark.parametrize(("argv", "over_ssh"), [
    (["ssh", "h"], True), (["/usr/bin/ssh", "h"], True), (["C:\\OpenSSH\\ssh.exe", "h"], False),
    (["ssh.exe", "h"], True), (["autossh", "-M", "0", "h"], True), (["python", "-m", "backend"], False),
])
def test_which_commands_run_through_a_remote_shell(argv, over_ssh):
    assert runs_over_ssh(argv) is over_ssh


@pytest.mark.parametrize(("argv", "host"), [
    (["ssh", "gpu-box", "python"], "gpu-box"),
    (["ssh", "-F", "/x/config", "-o", "ServerAliveInterval=15", "-4", "me@gpu", "py"], "me@gpu"),
    (["ssh", "-p2222", "-i", "key", "--", "gpu", "py"], "gpu"),
    (["ssh", "-v"], "HOST"),
])
def test_the_ssh_destination_is_found_among_the_options(argv, host):
    assert ssh_host(argv) == host


def test_a_start_failure_of_no_known_cause_gets_a_general_code_and_no_promise_of_a_retry():
    config = BackendConfig(remote_command="ssh gpu-box /opt/py -m backend serve")
    error = classify(config, {"code": "backend_died", "exit_code": 255, "message": "the backend process exited",
                              "stderr_tail": "kex_exchange_identification: Connection closed by remote host\n"
                              "something ssh has never said"})
    assert error.code == "ssh_failed" and "something ssh has never said" in error.message
    assert "ssh gpu-box true" in error.hint
    local = classify(BackendConfig(python=sys.executable), {"code": "backend_died", "exit_code": 1,
                                                            "message": "the backend process exited with code 1: boom",
                                                            "stderr_tail": "boom"})
    assert local.code == "backend_died" and "Backend Python" in local.hint and "restarted" not in local.hint


def test_a_status_request_that_waited_for_a_start_does_not_start_a_backend_after_stop(tmp_path):
    """`sleep` as the Backend Command never answers hello, so start() holds the start lock while a
    status request waits for it; stop() must end both, and nothing may run afterwards."""
    client = BackendClient(BackendConfig(remote_command="sleep 30"), backend_root=ROOT, log=lambda line: None)
    client.probe_dir = str(tmp_path)
    outcomes = {}

    def run(name, fn):
        try:
            outcomes[name] = fn()
        except UserError as e:
            outcomes[name] = e.code

    starting = threading.Thread(target=run, args=("start", client.start), daemon=True)
    starting.start()
    deadline = time.monotonic() + 10
    while client.pid is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first = client.pid
    asking = threading.Thread(target=run, args=("status", lambda: client.request("status")), daemon=True)
    asking.start()
    time.sleep(0.3)  # the status request now waits for the start's lock
    client.stop(timeout=1)
    starting.join(10)
    asking.join(10)
    assert outcomes == {"start": "cancelled", "status": "stopped"}
    assert not client.alive and client.pid is None
    time.sleep(0.3)
    assert not [pid for pid in descendants(os.getpid()) if process_name(pid) == "sleep 30"]
    assert not os.path.exists(f"/proc/{first}")


def test_every_start_failure_code_is_in_the_protocol_docs():
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    codes = [code for code, _, _ in SSH_CAUSES] + [code for code, _ in INTERPRETER_FAILURES.values()]
    assert len(codes) == 6 and all(f"| `{code}` |" in doc for code in codes), codes
