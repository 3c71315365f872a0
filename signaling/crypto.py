"""Encryption at rest of chat and notes (PROTOCOL.md §5: their text never
appears in the database in clear).

:class:`Cipher` wraps :class:`cryptography.fernet.MultiFernet` (AES-128-CBC with
an HMAC-SHA256, authenticated). The setting ``DISPATCH_DATA_KEY`` holds one
Fernet key or several separated by commas: the first encrypts, every one of
them decrypts. Rotation is therefore three steps:

1. put a new key (``dispatch keys new``) in front: ``NEW,OLD``;
2. run ``dispatch keys rotate``, which re-encrypts every stored row under NEW;
3. drop OLD from the setting.

Keys are never logged or put in an error message.
"""

from __future__ import annotations

from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.errors import Undecryptable

__all__ = ["Cipher", "DataKeyError", "new_key"]

_ENV: Final = "DISPATCH_DATA_KEY"


class DataKeyError(Undecryptable):
    """Stored data that no configured key opens: the wrong key, a corrupted
    row, or a retired key dropped before ``dispatch keys rotate`` ran.

    The operator's fault, not a user's; but a user who asks for such data gets
    a clear ``409 undecryptable`` naming the setting (an ``undecryptable``
    error frame on the websocket), never a 500.
    """


def new_key() -> str:
    """A fresh Fernet key (32 random bytes, URL-safe base64), as text."""
    return Fernet.generate_key().decode("ascii")


class Cipher:
    """Encrypts with the first key, decrypts with any. Immutable and cheap to
    share between tasks."""

    __slots__ = ("_fernet", "key_count")

    def __init__(self, keys: list[str]) -> None:
        """``keys``: Fernet keys, the primary (encrypting) one first.

        Raises ``ValueError`` naming the key's place (not its value) when one
        is not a Fernet key, or when there is none.
        """
        if not keys:
            raise ValueError(f"{_ENV} holds no key")
        fernets: list[Fernet] = []
        for i, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                where = _ENV if len(keys) == 1 else f"{_ENV} (key {i} of {len(keys)})"
                raise ValueError(
                    f"{where} is not a Fernet key: it must be 32 random bytes in URL-safe "
                    "base64 (44 characters)"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.key_count = len(fernets)

    @classmethod
    def from_setting(cls, value: str) -> Cipher:
        """A cipher from ``DISPATCH_DATA_KEY``: ``KEY`` or ``KEY1,KEY2,...``.
        Blanks around the commas are ignored; an empty item is an error."""
        items = [item.strip() for item in value.split(",")]
        if any(not item for item in items):
            raise ValueError(f"{_ENV} has an empty key: list Fernet keys separated by commas")
        return cls(items)

    def __repr__(self) -> str:
        return f"Cipher(keys={self.key_count})"

    def encrypt(self, text: str) -> bytes:
        """``text`` (UTF-8) sealed under the primary key; a new random IV each
        call, so equal texts give different tokens."""
        return self._fernet.encrypt(text.encode("utf-8"))

    def decrypt(self, token: bytes) -> str:
        """The text sealed in ``token``, opened with whichever key fits.

        Raises :class:`DataKeyError` when none does (or the token was altered).
        """
        try:
            plain = self._fernet.decrypt(token)
        except InvalidToken:
            raise DataKeyError(
                f"stored data cannot be decrypted with any of the {self.key_count} key(s) in "
                f"{_ENV}: wrong key, or an old key was removed before "
                "`dispatch keys rotate` re-encrypted the data"
            ) from None
        return plain.decode("utf-8")

    def rotate(self, token: bytes) -> bytes:
        """``token`` re-sealed under the primary key (its original timestamp
        kept). Raises :class:`DataKeyError` when no key opens it."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise DataKeyError(
                f"stored data cannot be re-encrypted: none of the {self.key_count} key(s) in "
                f"{_ENV} opens it"
            ) from None
