"""The embedded PostgreSQL (pgserver: PostgreSQL 16 + pgvector), started once per process per folder."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sony_rag.errors import ConfigurationError, DatabaseUnavailableError

logger = logging.getLogger("sony_rag")

_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def embedded_url(data_dir: Path) -> str:
    """Return a URL for the embedded server in ``data_dir``, starting it if needed; raises ConfigurationError."""
    folder = Path(data_dir).expanduser().resolve()
    with _lock:
        server = _servers.get(folder)
        if server is None:
            try:
                import pgserver
            except ImportError as error:
                raise ConfigurationError(
                    "DATABASE_URL is not set and the embedded server is not installed: "
                    "pip install 'sony-rag[embedded]' or set DATABASE_URL"
                ) from error
            folder.mkdir(parents=True, exist_ok=True)
            try:
                # 'stop' shuts the server down when the last process using this folder exits.
                server = pgserver.get_server(folder, cleanup_mode="stop")  # type: ignore[attr-defined]
            except Exception as error:
                raise DatabaseUnavailableError(f"the embedded server in {folder} did not start: {error}") from error
            _servers[folder] = server
            logger.info("sony-rag: using the embedded PostgreSQL in %s", folder)
        return str(server.get_uri())


def embedded_server(data_dir: Path) -> Any:
    """Return the pgserver handle for ``data_dir`` (started by ``embedded_url``); raises KeyError if not started."""
    return _servers[Path(data_dir).expanduser().resolve()]
