"""The development server's keys, kept across restarts in a local file.

``dispatch serve --dev`` without ``DISPATCH_SECRET`` used to make a random
secret each run, and derive the data key from it: after a restart every token
was void and every stored chat message and note undecryptable. Now the first
such run writes a secret and a Fernet data key to :data:`DEV_KEYS_FILE` in the
working directory (beside the development database, git-ignored, mode 0600),
and every later run reads them back. Delete the file to start afresh (with a
fresh ``dispatch.db`` too: the old data needs the old key).

Never for production: there the keys come from the environment (PROTOCOL.md §1).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet

from dispatch.settings import ConfigError

DEV_KEYS_FILE: Final = ".dispatch-dev.json"


@dataclass(frozen=True)
class DevKeys:
    secret: str
    data_key: str
    #: The file they are kept in, and whether this run created it.
    path: Path
    created: bool


def load_or_create(path: Path) -> DevKeys:
    """The keys kept in ``path``, written there first if the file does not exist.

    Two servers starting at once agree: the keys are written whole to a
    temporary file first, then linked into place (which fails if the file
    exists), so a reader never sees half a file and the loser reads the
    winner's. Raises :class:`ConfigError` naming the file when it exists but
    does not hold both keys.
    """
    if path.exists():
        return _read(path)
    keys = {"secret": secrets.token_urlsafe(32), "data_key": Fernet.generate_key().decode()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".dispatch-dev-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp: mode 0600
            json.dump(keys, f, indent=2)
            f.write("\n")
        os.link(tmp, path)
    except FileExistsError:
        return _read(path)
    finally:
        os.unlink(tmp)
    return DevKeys(keys["secret"], keys["data_key"], path, created=True)


def _read(path: Path) -> DevKeys:
    problem = (
        f"{path} does not hold the development keys (a JSON object with 'secret' and "
        "'data_key'); delete it to make new ones, or set DISPATCH_SECRET and DISPATCH_DATA_KEY"
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise ConfigError(problem) from None
    if not isinstance(data, dict):
        raise ConfigError(problem)
    secret, data_key = data.get("secret"), data.get("data_key")
    if not isinstance(secret, str) or not isinstance(data_key, str):
        raise ConfigError(problem)
    return DevKeys(secret, data_key, path, created=False)
