"""The service's protocol channel: private handles on stdin and stdout, so that nothing else in the
process (print, tqdm, a C library's printf, a child process) can read the requests or write into the
event stream."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO


def isolate_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Take private handles on stdin/stdout for the protocol; point fds 0 and 1 elsewhere.

    After this, anything that writes to fd 1 (print, tqdm, a C extension) lands on stderr, and
    nothing but the service can read the requests.
    """
    sys.stdout.flush()
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    protocol_in = os.fdopen(os.dup(0), "rb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return protocol_in, protocol_out
