"""A real OpenSSH server on 127.0.0.1 for the remote-backend tests: its own host key, authorised key
and config in a test folder, on a free high port, and an ssh client config (`Host tv-test`) that
reaches it without a prompt. `SSHD` is the server binary, or None with `WHY_NOT` saying why.

    server = Sshd(folder)                      # started and accepting connections
    server.backend_command()                   # "ssh -F .../ssh_config tv-test 'cd … && exec python -m backend serve --remote'"
    server.session_processes()                 # the sshd children serving connections (to SIGSTOP)
    server.stop()                              # the server, its sessions and what they started
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

HOST = "tv-test"


def _find_sshd() -> tuple[str | None, str]:
    path = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)),
                                        None)
    if path is None:
        return None, "no sshd here (scripts/setup installs openssh-server through apt-get where it can)"
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return None, "no ssh client (openssh-client) here"
    if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
        try:
            os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege separation folder (made by its service unit)
        except OSError as e:
            return None, f"sshd needs /run/sshd and it cannot be made: {e}"
    return path, ""


SSHD, WHY_NOT = _find_sshd()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tv-test", "-f", str(path)], check=True)
    return path


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(status.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Sshd:
    def __init__(self, folder: Path):
        assert SSHD is not None, WHY_NOT
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.host_key = keygen(folder / "host_key")
        self.user_key = keygen(folder / "id_tv")
        (folder / "authorized_keys").write_text((folder / "id_tv.pub").read_text())
        self.port = free_port()
        self.log = folder / "sshd.log"
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
            f"AllowUsers {self.user}\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n")
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(folder / 'host_key.pub').read_text()}")
        self.config = folder / "ssh_config"
        self.write_client_config()
        with open(self.log, "wb") as log:
            self.popen = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log,
                                          stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}: {self.log.read_text()}")

    def write_client_config(self, **overrides: str) -> Path:
        """The client's `~/.ssh/config` entry for this server (options overridable, e.g. IdentityFile)."""
        options = {"HostName": "127.0.0.1", "Port": str(self.port), "User": self.user,
                   "IdentityFile": str(self.user_key), "IdentitiesOnly": "yes",
                   "UserKnownHostsFile": str(self.known_hosts), "StrictHostKeyChecking": "yes",
                   "BatchMode": "yes", "ConnectTimeout": "10", "LogLevel": "ERROR"} | overrides
        self.config.write_text(f"Host {HOST}\n" + "".join(f"  {k} {v}\n" for k, v in options.items()))
        return self.config

    def backend_command(self, remote: str | None = None, *, log_dir: Path | None = None) -> str:
        """The Backend Command an artist would set: ssh to this server, run the checkout's service there."""
        if remote is None:
            env = f"OMP_NUM_THREADS=1 TEXTURE_VARIANTS_LOG_DIR={shlex.quote(str(log_dir or self.folder / 'logs'))}"
            remote = f"cd {shlex.quote(str(ROOT))} && exec env {env} {shlex.quote(sys.executable)} -m backend serve --remote"
        return f"ssh -F {shlex.quote(str(self.config))} {HOST} {shlex.quote(remote)}"

    def session_processes(self) -> list[int]:
        """The sshd processes serving connections now (the listener's descendants that are sshd)."""
        return [pid for pid in descendants(self.popen.pid) if process_name(pid).startswith("sshd")]

    def backends(self) -> list[int]:
        """The backend services this server's sessions started that are still there."""
        return [pid for pid in descendants(self.popen.pid) if "-m backend serve" in process_name(pid)]

    def stop(self) -> None:
        """End the server, its sessions and everything they started (stopped ones included)."""
        for pid in [*descendants(self.popen.pid), self.popen.pid]:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
        self.popen.wait(10)
