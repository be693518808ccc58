"""Where the service logs: the override, the platform cache folders, and a folder it cannot write."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import pytest

from backend.service import logs as service_logging


def test_the_environment_variable_wins(tmp_path):
    assert service_logging.log_dir({"TEXTURE_VARIANTS_LOG_DIR": str(tmp_path)}) == tmp_path


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG rule is the Linux/BSD one")
def test_xdg_cache_home_then_home_cache():
    assert service_logging.log_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/texture-variants/logs")
    assert service_logging.log_dir({}) == Path.home() / ".cache" / "texture-variants" / "logs"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_logs_rotate_in_the_folder(tmp_path, restore_logging):
    path = service_logging.setup_logging(folder=tmp_path / "logs")
    assert path == tmp_path / "logs" / "service.log"
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.RotatingFileHandler))
    assert handler.maxBytes == service_logging.LOG_MAX_BYTES and handler.backupCount == service_logging.LOG_BACKUPS
    logging.getLogger("backend.test").info("written to the file")
    handler.flush()
    assert "written to the file" in path.read_text()


def test_an_unwritable_folder_leaves_stderr_logging(tmp_path, restore_logging):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    assert service_logging.setup_logging(folder=blocker / "logs") is None
    assert any(type(h) is logging.StreamHandler for h in logging.getLogger().handlers)
