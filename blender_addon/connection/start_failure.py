"""Why a backend ended before it answered hello, told from its exit status and the last lines it wrote
to stderr, so that the error names what to fix. Standard library only.

A backend started over ssh fails to start for reasons no retry can help with: ssh's own exit status
255 with its message (the host key, the key it offered, the host name, the port), the remote shell's
126/127 (the interpreter path in the Backend Command), or Python's "No module named backend" (an
interpreter without the backend). Each gets its own code (docs/PROTOCOL.md, "Error codes") and a
hint naming the preference or the `~/.ssh` step that fixes it.
"""

from __future__ import annotations

import re

from ..errors import UserError
from .config import ENV_COMMAND, ENV_PYTHON, BackendConfig, runs_over_ssh, setting_name

SSH_FAILED = 255  # ssh's own exit status (the remote command's is passed through)
# A POSIX shell's exit status for the command it was asked to run: (code, what is wrong with it).
INTERPRETER_FAILURES = {126: ("interpreter_not_executable", "not executable"), 127: ("interpreter_not_found", "not found")}
SSH_OPTIONS_WITH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")  # ssh's options that take the next argument

# (code, what ssh said, matched case-insensitively, message prefix), for exit status 255.
SSH_CAUSES = (
    ("ssh_host_key", r"host key verification failed|remote host identification has changed|"
     r"host key for .* has changed|no \S+ host key is known", "ssh does not trust the server's host key"),
    ("ssh_auth", r"permission denied|too many authentication failures|no more authentication methods",
     "the server refused ssh's login"),
    ("ssh_unknown_host", r"could not resolve hostname|name or service not known|nodename nor servname|"
     r"temporary failure in name resolution", "ssh cannot find the server"),
    ("ssh_unreachable", r"connection refused|connection timed out|operation timed out|no route to host|"
     r"network is unreachable|connection reset", "ssh cannot reach the server"),
)
NO_BACKEND = re.compile(r"No module named '?backend'?(\s|$|\.)")


def ssh_host(argv: list[str]) -> str:
    """The destination of an ssh command line (its first argument that is no option), or "HOST"."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            return next(args, "HOST")
        if arg.startswith("-") and len(arg) > 1:
            if arg[-1] in SSH_OPTIONS_WITH_VALUE and len(arg) == 2:
                next(args, None)
            continue
        return arg
    return "HOST"


def classify(config: BackendConfig, died: dict) -> UserError:
    """The error for a backend that ended during start (`died`: the client's `backend_died` report)."""
    code, stderr, message = died.get("exit_code"), died.get("stderr_tail") or "", died.get("message", "")
    argv = config.command()
    command = setting_name("Backend Command", ENV_COMMAND)
    interpreter = command if config.remote_command else setting_name("Backend Python", ENV_PYTHON)
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    said = f": {last}" if last else f" (exit status {code})"
    if code == SSH_FAILED and runs_over_ssh(argv):
        host = ssh_host(argv)
        for cause, pattern, what in SSH_CAUSES:
            if re.search(pattern, stderr, re.IGNORECASE):
                return UserError(cause, what + said, _ssh_hint(cause, host, command))
        return UserError("ssh_failed", f"ssh could not run the backend{said}",
                         f"run `ssh {host} true` in a terminal to see what ssh needs, then fix ~/.ssh/config "
                         f"or {command}")
    if NO_BACKEND.search(stderr):
        return UserError("backend_not_installed", f"the interpreter has no backend package{said}",
                         "use the .venv/bin/python that scripts/setup made in the backend's checkout (on the "
                         f"server, for a remote backend) in {interpreter}")
    if code in INTERPRETER_FAILURES and config.remote_command:
        cause, wrong = INTERPRETER_FAILURES[code]
        return UserError(cause, f"the backend's interpreter is {wrong}{said}",
                         f"fix the interpreter path in {command}: the server's .venv/bin/python of its "
                         "checkout, e.g. `ssh gpu-box /opt/texture-variants/.venv/bin/python -m backend serve "
                         "--remote`")
    return UserError("backend_died", message or f"the backend ended before it answered{said}",
                     f"its last line says why (the system console shows its whole log); fix what it names in "
                     f"{interpreter}, then try again")


def _ssh_hint(cause: str, host: str, command: str) -> str:
    if cause == "ssh_host_key":
        return (f"if the server was reinstalled, remove its old key with `ssh-keygen -R {host}` (~/.ssh/known_hosts); "
                f"then run `ssh {host}` once in a terminal and accept its key")
    if cause == "ssh_auth":
        return (f"make `ssh {host}` work without a password: `ssh-keygen -t ed25519` and `ssh-copy-id {host}` "
                "once in a terminal (or set IdentityFile in its ~/.ssh/config entry)")
    if cause == "ssh_unknown_host":
        return f"check the host name in {command}, or give it a `Host {host}` entry with its HostName in ~/.ssh/config"
    return (f"check that the server is on and runs sshd, and the host and port in {command} or its "
            "~/.ssh/config entry")
