"""signaling.crypto.Cipher: sealing chat and notes, several keys, rotation."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from signaling.crypto import Cipher, DataKeyError, new_key

KEY_A = new_key()
KEY_B = new_key()
KEY_C = new_key()

TEXTS = ["hello", "", "I feel anxious today 😟 — naïve café", "x" * 4000, "line\nbreak\ttab"]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(text: str) -> None:
    cipher = Cipher.from_setting(KEY_A)
    token = cipher.encrypt(text)
    assert isinstance(token, bytes)
    assert cipher.decrypt(token) == text


def test_tokens_hide_the_text_and_differ_each_time() -> None:
    cipher = Cipher.from_setting(KEY_A)
    text = "my secret worry about work"
    a, b = cipher.encrypt(text), cipher.encrypt(text)
    assert a != b  # a fresh IV each time
    for token in (a, b):
        assert text.encode() not in token
        assert b"worry" not in base64.urlsafe_b64decode(token)
    # A standard Fernet token: another Fernet implementation opens it.
    assert Fernet(KEY_A).decrypt(a) == text.encode()


def test_first_key_encrypts_every_key_decrypts() -> None:
    both = Cipher.from_setting(f"{KEY_B},{KEY_A}")
    assert both.key_count == 2
    token = both.encrypt("new data")
    assert Cipher.from_setting(KEY_B).decrypt(token) == "new data"
    with pytest.raises(DataKeyError):
        Cipher.from_setting(KEY_A).decrypt(token)
    # Data sealed under the old key is still readable.
    old = Cipher.from_setting(KEY_A).encrypt("old data")
    assert both.decrypt(old) == "old data"


def test_blanks_around_commas_are_ignored() -> None:
    cipher = Cipher.from_setting(f"  {KEY_B} ,\t{KEY_A} ")
    assert cipher.key_count == 2
    assert Cipher.from_setting(KEY_B).decrypt(cipher.encrypt("t")) == "t"


def test_rotate_reseals_under_the_first_key() -> None:
    old_token = Cipher.from_setting(KEY_A).encrypt("rotate me")
    rotated = Cipher.from_setting(f"{KEY_B},{KEY_A}").rotate(old_token)
    assert rotated != old_token
    assert Cipher.from_setting(KEY_B).decrypt(rotated) == "rotate me"
    with pytest.raises(DataKeyError):
        Cipher.from_setting(KEY_A).decrypt(rotated)


def test_wrong_key_is_a_clear_error_without_the_key() -> None:
    token = Cipher.from_setting(KEY_A).encrypt("private")
    wrong = Cipher.from_setting(f"{KEY_B},{KEY_C}")
    with pytest.raises(DataKeyError, match="cannot be decrypted") as info:
        wrong.decrypt(token)
    message = str(info.value)
    assert "DISPATCH_DATA_KEY" in message and "2 key(s)" in message
    assert KEY_B not in message and KEY_C not in message and "private" not in message
    with pytest.raises(DataKeyError, match="cannot be re-encrypted"):
        wrong.rotate(token)


def test_tampered_or_garbage_tokens_are_refused() -> None:
    cipher = Cipher.from_setting(KEY_A)
    token = bytearray(cipher.encrypt("untouched"))
    token[-5] = ord("A") if token[-5] != ord("A") else ord("B")
    with pytest.raises(DataKeyError):
        cipher.decrypt(bytes(token))
    with pytest.raises(DataKeyError):
        cipher.decrypt(b"not a token at all")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("", "empty key"),
        ("not-a-key", "DISPATCH_DATA_KEY is not a Fernet key"),
        (f"{KEY_A},", "empty key"),
        (f"{KEY_A},,{KEY_B}", "empty key"),
        (f"{KEY_A},short", r"DISPATCH_DATA_KEY \(key 2 of 2\) is not a Fernet key"),
    ],
)
def test_bad_settings_are_refused(setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Cipher.from_setting(setting)
    assert KEY_A not in str(info.value)


def test_no_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="holds no key"):
        Cipher([])


def test_new_key_is_a_fresh_fernet_key() -> None:
    a, b = new_key(), new_key()
    assert a != b and len(a) == 44
    assert len(base64.urlsafe_b64decode(a)) == 32
    Fernet(a)


def test_repr_shows_no_key() -> None:
    cipher = Cipher.from_setting(f"{KEY_A},{KEY_B}")
    assert repr(cipher) == "Cipher(keys=2)"
    assert KEY_A not in repr(cipher)
