"""Signed checkpoints: the signature, the key file, and where unsigned ones are accepted.

HMAC-SHA256 over the delivered bytes; a wrong key, an unsigned checkpoint and one altered after
signing are told apart; a key file that is missing, unreadable, empty or too short is a
configuration error naming the parameter (or option) and the file, never the key; unsigned
checkpoints are accepted only where `allow_unsigned` says so: the simulated graph, not the shipped
(real robot) default. The refusals over DDS, with the old policy kept running, are in
test_hotswap.py.
"""
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from mile_ros import interfaces as itf
from mile_ros import params
from mile_ros.params import ConfigError
from mile_ros.policy import signing
from mile_ros.policy.signing import SignatureError, verify_signature
from mile_ros.tools import collect, demo, train

ROOT = Path(__file__).resolve().parents[1]
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
    assert itf.checkpoint_nonce(msg) is None


@pytest.mark.parametrize("signed", [True, False])
def test_each_publication_names_its_offer_apart_from_the_signature(key, signed):
    signature = signing.sign(DATA, key) if signed else None
    nonce = itf.new_offer_nonce()
    msg = itf.checkpoint_msg(DATA, signature, nonce)
    assert itf.checkpoint_signature(msg) == signature and itf.checkpoint_nonce(msg) == nonce
    others = (itf.offer_digest(DATA, signature, itf.new_offer_nonce()),
              itf.offer_digest(DATA, signature))
    assert itf.offer_digest(DATA, signature, nonce) not in others


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


@pytest.mark.parametrize("case", ["missing", "empty", "short"])
def test_policy_server_with_a_bad_key_file_stops_with_a_configuration_error(tmp_path, case):
    path = tmp_path / "station.key"
    if case != "missing":
        path.write_text("" if case == "empty" else "s3cr3t-7")
    proc = subprocess.run([sys.executable, "-m", "mile_ros.nodes.policy_server", "--ros-args",
                           "-r", f"__ns:=/sign_cfg_{case}", "-p",
                           f"checkpoint_key_file:={path}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "policy_server: configuration error: policy_server parameter " \
           f"'checkpoint_key_file' ('{path}')" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "s3cr3t" not in proc.stderr + proc.stdout


def test_train_with_a_missing_key_file_stops_before_training(tmp_path, capfd):
    missing = tmp_path / "trainer.key"
    rc = train.main(["--bags", str(tmp_path / "no-bags"), "--key-file", str(missing),
                     "--no-progress"])
    err = capfd.readouterr().err
    assert rc == 2, err
    assert f"train: configuration error: --key-file ('{missing}'): no such key file" in err, err
    assert "data:" not in err and "Traceback" not in err      # stopped before reading bags


def test_unsigned_checkpoints_are_accepted_only_in_the_simulated_graph(tmp_path):
    shipped = params.defaults()["policy_server"]
    assert shipped["allow_unsigned"] is False and shipped["checkpoint_key_file"] == ""
    sim = collect.node_overrides(True, False, "runs/x", 1, 2)
    real = collect.node_overrides(False, False, "runs/x", 1, 2)
    assert sim["policy_server"] == {"allow_unsigned": True}
    assert real["policy_server"] == {}                      # the YAML's value: false as shipped
    args = demo.build_parser().parse_args(["--out", str(tmp_path / "demo")])
    values = demo.DemoGraph(args, tmp_path / "demo").values(1)
    assert values["policy_server"]["allow_unsigned"] is True
    assert values["policy_server"]["receive_dir"] == str(tmp_path / "demo" / "received")
    # a real robot's file may still say so explicitly; collect does not override it
    mine = tmp_path / "lab.yaml"
    mine.write_text("policy_server:\n  ros__parameters:\n    allow_unsigned: true\n")
    lab = collect.resolved_params(collect.build_parser().parse_args(
        ["--out", str(tmp_path / "run"), "--params", str(mine)]))
    assert lab["policy_server"]["allow_unsigned"] is True
