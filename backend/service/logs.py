"""Where the service logs: stderr and a rotating file in the user's cache folder.

The folder is `$TEXTURE_VARIANTS_LOG_DIR` when set (tests, farms), else the platform's cache folder:
`%LOCALAPPDATA%\\texture-variants\\logs` on Windows, `~/Library/Logs/texture-variants` on macOS,
`$XDG_CACHE_HOME/texture-variants/logs` (default `~/.cache/...`) elsewhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOG_FILE_NAME = "service.log"
LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"


def log_dir(environ=os.environ) -> Path:
    if environ.get("TEXTURE_VARIANTS_LOG_DIR"):
        return Path(environ["TEXTURE_VARIANTS_LOG_DIR"])
    if sys.platform == "win32":
        root = environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(root) / "texture-variants" / "logs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "texture-variants"
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "texture-variants" / "logs"


def records_dir(environ=os.environ) -> Path:
    """Where jobs record their staging folders while they run (backend.service.job_folder): beside the
    logs, so a service killed mid-job is cleaned up after by the next one."""
    return log_dir(environ) / "jobs-in-progress"


def setup_logging(verbose: bool = False, folder: Path | None = None) -> Path | None:
    """Log to stderr (INFO, or DEBUG when verbose) and to the rotating file; return the file's path."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    folder = folder if folder is not None else log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOG_FILE_NAME
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                                       encoding="utf-8")
    except OSError as e:  # a read-only home must not stop the service; stderr still has everything
        logging.getLogger(__name__).warning("cannot write logs to %s: %s", folder, e)
        return None
    handler.setFormatter(formatter)
    root.addHandler(handler)
    # Libraries are chatty at INFO; their warnings are enough unless asked for details.
    for name in ("diffusers", "transformers", "urllib3", "PIL"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    return path
