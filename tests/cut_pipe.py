"""A stand-in for a network link that drops: `python tests/cut_pipe.py N COMMAND...` runs COMMAND,
passes stdin and stdout through, and after passing N `chunk` events on kills COMMAND and exits, as
an ssh connection that breaks mid-download would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def main() -> int:
    limit, command = int(sys.argv[1]), sys.argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                             start_new_session=True)

    def pump_in() -> None:
        try:
            while data := os.read(0, 1 << 16):
                child.stdin.write(data)
        except OSError:
            pass

    threading.Thread(target=pump_in, daemon=True).start()
    seen = 0
    for line in child.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
        seen += b'"type":"chunk"' in line
        if seen >= limit:
            os.killpg(child.pid, signal.SIGKILL)
            return 1
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
