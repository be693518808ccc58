"""A remote backend over a real OpenSSH link (docs/guide/batch-and-remote.md, "Remote GPU"): an sshd on
127.0.0.1 started here with its own host key, authorised key and config; the Backend Command is
`ssh -F <config> tv-test '<checkout>/…/python -m backend serve --remote'`, as an artist would set it.

Results are byte-identical to a local run; a link that drops mid-upload is `backend_died` within 2 s
with ssh's own line; a link that hangs (the session's sshd stopped) is `backend_stalled` once the
heartbeats stop; start options with spaces and shell characters arrive as they were; each start
failure has its own code and hint; stop() means stopped. Slow (about a minute):
`scripts/test -m slow tests/test_ssh_remote.py`.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blender_addon.connection.client import BackendClient
from blender_addon.connection.config import resolve_config
from blender_addon.errors import UserError
from tests.conftest import ROOT
from tests.sshd import SSHD, WHY_NOT, Sshd, free_port, keygen

pytestmark = [pytest.mark.slow, pytest.mark.skipif(SSHD is None, reason=WHY_NOT)]

JOB = dict(engine="patch", size=128, variants=2, seed=11, tiled_preview=True)
# What ssh says when the server's side of the link goes away (how depends on the unread data it had).
SSH_LINK_LOST = r"exited with code 255: .*(closed by remote host|reset by peer|Broken pipe)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_client_config(server, monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTURE_VARIANTS_LOG_DIR", str(tmp_path / "logs"))
    server.write_client_config()
    yield
    server.known_hosts.write_text(f"[127.0.0.1]:{server.port} {(server.folder / 'host_key.pub').read_text()}")


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """About 8.7 MB of noise: an upload of 34 chunks."""
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1700, 1700, 3), dtype=np.uint8)).save(path)
    return path


def _client(command: str, tmp_path: Path, **config) -> BackendClient:
    client = BackendClient(resolve_config(python=sys.executable, command=command, environ={}, **config),
                           backend_root=ROOT, log=lambda line: None)
    client.probe_dir = str(tmp_path)
    return client


def _paced(client: BackendClient, seconds: float = 0.05) -> None:
    """A slow link: each upload chunk waits a little, so a test can act in the middle of an upload."""
    send = client._send

    def paced(conn, message, **how):
        if how.get("bulk"):
            time.sleep(seconds)
        return send(conn, message, **how)

    client._send = paced


class Call:
    """`fn()` on a thread: its result or UserError, and when it returned."""

    def __init__(self, fn):
        self.result = self.error = self.ended = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        try:
            self.result = fn()
        except UserError as e:
            self.error = e
        self.ended = time.monotonic()

    def join(self, timeout: float) -> Call:
        self._thread.join(timeout)
        return self


def _wait_for_upload(workspace: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(p.stat().st_size > 0 for p in (workspace / "uploads").rglob("*.part")):
            return
        time.sleep(0.01)
    raise AssertionError("the upload never began")


def _until(condition, within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_results_over_ssh_are_byte_identical_to_a_local_run(server, tmp_path, color_texture_path):
    results = {}
    for name, command in (("ssh", server.backend_command()), ("local", None)):
        with _client(command, tmp_path) as client:
            job = client.generate(color_texture_path, tmp_path / name, **JOB)
            results[name] = client.wait(job, timeout=300)
            results[name]["shared"] = client.hello["filesystem"]["shared"]
    assert results["ssh"]["type"] == results["local"]["type"] == "result", results
    assert (results["ssh"]["shared"], results["local"]["shared"]) == (False, True)
    files = {name: [Path(e[k]) for e in result["files"] for k in ("path", "tiled")] for name, result in results.items()}
    assert len(files["ssh"]) == 4 and [p.name for p in files["ssh"]] == [p.name for p in files["local"]]
    assert [p.read_bytes() for p in files["ssh"]] == [p.read_bytes() for p in files["local"]]
    assert _until(lambda: not server.backends(), 10)  # the remote service exited with its session


@pytest.mark.parametrize("cut", ["ssh client killed", "sshd session killed"])
def test_a_link_that_drops_mid_upload_is_backend_died_within_2_s(server, tmp_path, big_png, cut):
    client = _client(server.backend_command(), tmp_path)
    lines = []
    client._log = lines.append
    client.start()
    _paced(client)
    sending = Call(lambda: client.generate(big_png, tmp_path / "job", engine="patch", size=64))
    _wait_for_upload(Path(client.hello["filesystem"]["workspace"]))
    cut_at = time.monotonic()
    for pid in [client.pid] if cut == "ssh client killed" else server.session_processes():
        os.kill(pid, signal.SIGKILL)
    sending.join(10)
    assert sending.error is not None and sending.error.code == "backend_died", sending.error
    assert sending.ended - cut_at <= 2.0
    if cut == "sshd session killed":  # ssh says why, and the error carries its line
        assert re.search(SSH_LINK_LOST, sending.error.message), sending.error.message
    assert sum("could not send" in line for line in lines) <= 1
    assert not client.alive
    client.stop()


def test_a_link_that_drops_mid_download_ends_the_job_with_backend_died_within_2_s(server, tmp_path,
                                                                                    color_texture_path):
    client = _client(server.backend_command(), tmp_path)
    client.download_chunk_bytes = 4096  # many chunks per file, so the cut falls inside one
    on_line, cut = client._on_line, []

    def cut_at_first_chunk(conn, line):
        if not cut and b'"type":"chunk"' in line.replace(b" ", b""):
            cut.append(time.monotonic())
            for pid in server.session_processes():
                os.kill(pid, signal.SIGKILL)
        on_line(conn, line)

    client._on_line = cut_at_first_chunk
    job = client.generate(color_texture_path, tmp_path / "job", **JOB)
    final = client.wait(job, timeout=120)
    assert cut and final["type"] == "error" and final["code"] == "backend_died", final
    assert time.monotonic() - cut[0] <= 2.0
    assert re.search(SSH_LINK_LOST, final["message"]), final["message"]
    assert not (tmp_path / "job").exists()  # nothing of the job is kept
    client.stop()


def test_an_answer_awaited_after_the_link_died_fails_at_once(server, tmp_path, color_texture_path):
    """The link dies after the last chunk was queued: the upload_end asked for next fails at once."""
    client = _client(server.backend_command(), tmp_path)
    client.start()
    send = client._send

    def then_cut(conn, message, **how):
        sent = send(conn, message, **how)
        if message.get("type") == "upload_chunk":
            for pid in server.session_processes():
                os.kill(pid, signal.SIGKILL)
            assert _until(lambda: conn.death is not None, 5)
        return sent

    client._send = then_cut
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        client.generate(color_texture_path, tmp_path / "job", engine="patch", size=64)
    assert raised.value.code == "backend_died", raised.value
    assert time.monotonic() - started <= 2.0
    assert re.search(SSH_LINK_LOST, raised.value.message), raised.value.message
    client.stop()


def test_a_hung_link_mid_job_is_backend_stalled_once_heartbeats_stop(server, tmp_path, color_texture_path):
    client = _client(server.backend_command() + " --heartbeat-s 0.5", tmp_path)
    client.heartbeat_timeout = 2.0
    client.start()
    assert client.hello["heartbeat_s"] == 0.5
    time.sleep(1.5)  # heartbeats keep an idle link alive
    assert client.alive
    job = client.generate(color_texture_path, tmp_path / "job", engine="patch", size=512, variants=8)
    stopped = server.session_processes()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        final = client.wait(job, timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert final["type"] == "error" and final["code"] == "backend_stalled", final
    assert 2.0 - 0.5 <= took <= 2.0 + 1.5  # silence counts from the last heartbeat, at most 0.5 s before the stop
    assert "heartbeat" in final["message"] and "ssh keepalives" in final["hint"]
    assert not client.alive
    assert _until(lambda: not server.backends(), 30)  # the link resumed: the server's side ended too
    client.stop()


def test_start_options_with_spaces_and_shell_characters_arrive_as_they_were(server, tmp_path):
    base = str(tmp_path / "models dir" / "it's $HOME; `touch x` \"q\" & ü.safetensors")
    ip_adapter = "a b;c|d>e"
    with _client(server.backend_command(), tmp_path, base=base, ip_adapter=ip_adapter) as client:
        models = client.start()["models"]
    assert (models["base"], models["ip_adapter"]) == (base, ip_adapter)
    assert not (Path(ROOT) / "x").exists()


def _start_error(command: str, tmp_path: Path) -> UserError:
    client = _client(command, tmp_path)
    try:
        with pytest.raises(UserError) as raised:
            client.start()
    finally:
        client.stop()
    return raised.value


def _host_key_changed(server, tmp_path) -> str:
    other = keygen(tmp_path / "other_host_key").with_suffix(".pub").read_text()
    server.known_hosts.write_text(f"[127.0.0.1]:{server.port} {other}")
    return server.backend_command()


START_FAILURES = {
    "host key changed": (_host_key_changed, "ssh_host_key", ("ssh-keygen -R tv-test", "known_hosts")),
    "key refused": (lambda server, tmp: (server.write_client_config(IdentityFile=str(keygen(tmp / "id_other"))),
                                         server.backend_command())[1],
                    "ssh_auth", ("ssh-copy-id tv-test", "IdentityFile")),
    "unknown host": (lambda server, tmp: (server.write_client_config(HostName="no-such-host.invalid"),
                                          server.backend_command())[1],
                     "ssh_unknown_host", ("Backend Command", "~/.ssh/config")),
    "connection refused": (lambda server, tmp: (server.write_client_config(Port=str(free_port())),
                                                server.backend_command())[1],
                           "ssh_unreachable", ("runs sshd", "Backend Command")),
    "no interpreter there": (lambda server, tmp: server.backend_command("/opt/nowhere/bin/python -m backend serve"),
                             "interpreter_not_found", ("Backend Command", ".venv/bin/python")),
    "interpreter not executable": (lambda server, tmp: server.backend_command(
        f"{(tmp / 'python').touch() or tmp / 'python'} -m backend serve"),
        "interpreter_not_executable", ("Backend Command", ".venv/bin/python")),
    "no backend package": (lambda server, tmp: server.backend_command("cd / && /usr/bin/python3 -m backend serve"),
                           "backend_not_installed", ("Backend Command", "scripts/setup")),
}


@pytest.mark.parametrize("case", START_FAILURES)
def test_each_start_failure_has_its_own_code_and_a_hint_that_names_the_fix(server, tmp_path, case):
    make_command, code, hint_names = START_FAILURES[case]
    started = time.monotonic()
    error = _start_error(make_command(server, tmp_path), tmp_path)
    assert error.code == code, error
    assert all(name in error.hint for name in hint_names), error.hint
    assert "restarted" not in error.hint
    assert time.monotonic() - started < 15


def test_stop_means_stopped_even_with_a_status_request_queued_behind_a_blocked_upload(server, tmp_path, big_png):
    client = _client(server.backend_command(), tmp_path)
    client.start()
    stopped = server.session_processes()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        uploading = Call(lambda: client.generate(big_png, tmp_path / "job", engine="patch", size=64))
        time.sleep(0.5)
        client.request("status")  # queued behind the blocked upload
        ssh_pid = client.pid
        client.stop(timeout=1)
        with pytest.raises(UserError) as raised:
            client.request("status")
        assert raised.value.code == "stopped"
        uploading.join(5)
        assert uploading.error is not None and uploading.error.code == "cancelled"
        assert not client.alive and client.pid is None
        assert _until(lambda: not os.path.exists(f"/proc/{ssh_pid}"), 5)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert _until(lambda: not server.backends(), 30)
