"""Signed checkpoints: the signature and the key file.

HMAC-SHA256 over the delivered bytes; a wrong key, an unsigned checkpoint and one altered after
signing are told apart; a key file that is missing, unreadable, empty or too short is a
configuration error naming the parameter (or option) and the file, never the key.
"""
import secrets

import pytest

from mile_ros import interfaces as itf
from mile_ros.params import ConfigError
from mile_ros.policy import signing
from mile_ros.policy.signing import SignatureError, verify_signature

DATA = b"the archive bytes of a checkpoint" * 100


@pytest.fixture
def key():
    return secrets.token_hex(32).encode()


def test_a_right_signature_is_verified(key):
    signature = signing.sign(DATA, key)
    assert signature.startswith("hmac-sha256:") and len(signature) == len("hmac-sha256:") + 64
    assert verify_signature(DATA, signature, key, allow_unsigned=False) == "signature verified"
    assert verify_signature(DATA, signature.upper().replace("HMAC-SHA256", "hmac-sha256"), key,
                            allow_unsigned=False) == "signature verified"


@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_another_key_or_altered_bytes_are_a_bad_signature_whatever_allow_unsigned_says(
        key, allow_unsigned):
    signature = signing.sign(DATA, key)
    altered = bytearray(DATA)
    altered[7] ^= 0x01
    for data, sig in ((DATA, signing.sign(DATA, secrets.token_hex(32).encode())),
                      (bytes(altered), signature),
                      (DATA + b"\0", signature),
                      (DATA, "hmac-sha256:" + "0" * 64),
                      (DATA, "sha1:" + signature.split(":")[1]),
                      (DATA, "hmac-sha256:" + signature.split(":")[1][:-2])):
        with pytest.raises(SignatureError, match=r"^bad signature"):
            verify_signature(data, sig, key, allow_unsigned)


def test_unsigned_is_refused_unless_allowed(key):
    with pytest.raises(SignatureError, match=r"^unsigned checkpoint.*allow_unsigned is false"):
        verify_signature(DATA, None, key, allow_unsigned=False)
    with pytest.raises(SignatureError, match=r"^unsigned checkpoint"):
        verify_signature(DATA, "", None, allow_unsigned=False)
    assert "allow_unsigned" in verify_signature(DATA, None, key, allow_unsigned=True)
    assert "allow_unsigned" in verify_signature(DATA, None, None, allow_unsigned=True)


def test_a_signed_checkpoint_at_a_station_without_a_key(key):
    signature = signing.sign(DATA, key)
    with pytest.raises(SignatureError, match=r"^bad signature: .*no checkpoint_key_file"):
        verify_signature(DATA, signature, None, allow_unsigned=False)
    assert "not checked" in verify_signature(DATA, signature, None, allow_unsigned=True)


def test_the_signature_travels_in_the_checkpoint_message(key):
    signature = signing.sign(DATA, key)
    msg = itf.checkpoint_msg(DATA, signature)
    assert bytes(msg.data) == DATA and itf.checkpoint_signature(msg) == signature
    assert msg.layout.dim[0].size == len(DATA)
    unsigned = itf.checkpoint_msg(DATA)
    assert bytes(unsigned.data) == DATA and itf.checkpoint_signature(unsigned) is None


def test_the_key_is_the_file_content_without_surrounding_whitespace(tmp_path, key):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(key + b"\n")
    b.write_bytes(b"  " + key)
    assert signing.read_key(a, "x") == signing.read_key(b, "x") == key


@pytest.mark.parametrize("case, words", [("missing", "no such key file"),
                                         ("directory", "cannot read the key file"),
                                         ("empty", "the key file is empty"),
                                         ("short", "shorter than 16 bytes")])
def test_key_file_problems_name_the_parameter_and_file_never_the_key(tmp_path, case, words):
    path = tmp_path / "station.key"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_text(" \n")
    elif case == "short":
        path.write_text("s3cr3t-7\n")
    with pytest.raises(ConfigError) as e:
        signing.read_key(path, "policy_server parameter 'checkpoint_key_file'")
    text = str(e.value)
    assert text.startswith(f"policy_server parameter 'checkpoint_key_file' ('{path}')"), text
    assert words in text and "s3cr3t" not in text, text


def test_a_key_file_others_may_read_is_warned_about(tmp_path, key):
    path = tmp_path / "station.key"
    path.write_bytes(key)
    path.chmod(0o644)
    assert "chmod 600" in signing.loose_permissions(path)
    path.chmod(0o600)
    assert signing.loose_permissions(path) is None
