"""Atomic writes: a crash leaves the previous file or none, never half of one."""

import hashlib
import os

import pytest

from edgehal.fileio import atomic_path, atomic_write_bytes, atomic_write_text, atomic_write_with, sha256_file


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.onnx"
    atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the sec")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_write_creates_folders_and_gets_the_usual_mode(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_writer_callback_and_sha256(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_with(target, lambda tmp: tmp.write_bytes(b"abc" * 1000))
    assert sha256_file(target, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
