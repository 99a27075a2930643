"""files: every file read through one checked open (no FIFO hangs, named problems), JSON and .npy read with
their problems named, writes that a rerun reads back are atomic, and paths from files stay where they must."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_read_json_names_the_file_the_problem_and_the_fix(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("")
    with pytest.raises(files.FileContentError, match=rf"settings {path} is empty \(a write that was cut short\?\); "
                                                     "export again"):
        files.read_json(path, "settings", "export again")
    path.write_text('{"level": "vid')
    with pytest.raises(files.FileContentError, match=rf"settings {path} is not valid JSON \(Unterminated string"):
        files.read_json(path, "settings")
    path.write_text('{"model": {"layers": [1, %s]}}' % ("9" * 5000))  # Python alone: its digit-limit message
    with pytest.raises(files.FileContentError, match=r"model\.layers\.1 is a 5000-digit number"):
        files.read_json(path, "config")
    path.write_text('{"a": ' + "1" * 64 + ', "b": -2}')  # long but legal integers are values
    assert files.read_json(path) == {"a": int("1" * 64), "b": -2}
    path.write_text('"' + "x" * 100 + '"')
    with pytest.raises(files.FileContentError, match="is larger than 0 MiB"):
        files.read_json(path, max_bytes=50)
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(files.NotARegularFileError, match="is a FIFO"):  # refused at once, never blocks
        files.read_json(tmp_path / "fifo.json")


def npy_header(shape, descr="<f4"):
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def test_load_npy_checks_the_header_against_the_file_before_reading(tmp_path):
    good = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "good.npy", good)
    np.testing.assert_array_equal(files.load_npy(tmp_path / "good.npy"), good)
    (tmp_path / "lie.npy").write_bytes(npy_header((10 ** 9, 512)) + bytes(16))  # 2 TB declared, 16 bytes held
    with pytest.raises(files.FileContentError, match="declares 2048000000000 bytes of data but holds 16"):
        files.load_npy(tmp_path / "lie.npy")
    (tmp_path / "object.npy").write_bytes(npy_header((2, 2), "|O") + bytes(32))
    with pytest.raises(files.FileContentError, match="holds a object array"):
        files.load_npy(tmp_path / "object.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    with pytest.raises(files.FileContentError, match=r"shape \(4,\); expected 2-D"):
        files.load_npy(tmp_path / "flat.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(files.FileContentError, match="is not a .npy array"):
        files.load_npy(tmp_path / "text.npy")
    os.mkfifo(tmp_path / "fifo.npy")
    with pytest.raises(files.NotARegularFileError, match="is a FIFO"):
        files.load_npy(tmp_path / "fifo.npy")


def test_inside_refuses_what_leaves_its_base(tmp_path):
    base = tmp_path / "store"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    assert files.inside(base, "sub/a.npy", "line 1") == os.path.join(base, "sub/a.npy")
    for entry, reason in (("/etc/passwd", "is an absolute path"), ("../secret", r"leads outside .* \(through '\.\.'\)"),
                          ("sub/../../secret", "through '..'")):
        with pytest.raises(files.OutsideError, match=rf"line 3: .*{reason}"):
            files.inside(base, entry, "line 3")
    os.symlink(tmp_path / "secret", base / "link")
    with pytest.raises(files.OutsideError, match=r"shard: link leads outside .* \(a link to .*secret\)"):
        files.inside(base, "link", "shard")
    assert files.inside(base, "link", "a list file", links_may_leave=True) == os.path.join(base, "link")


def test_atomic_write_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"old": 1}')
    with pytest.raises(RuntimeError):
        with files.atomic_write(path, "results") as f:
            f.write('{"new"')
            raise RuntimeError("killed half-way")
    assert path.read_text() == '{"old": 1}' and os.listdir(tmp_path) == ["results.json"]
    files.write_json(path, {"top1": float("nan"), "scores": [1.0, float("inf")]}, "results")
    assert json.loads(path.read_text()) == {"top1": None, "scores": [1.0, None]}  # strict JSON, no NaN


def test_a_full_disk_is_one_message_and_the_old_file_survives(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: the write fails with EFBIG as it would with ENOSPC."""
    path = tmp_path / "settings.json"
    path.write_text('{"level": "video"}')
    script = textwrap.dedent(f"""
        import resource, signal
        from data_pipelines import files
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        try:
            files.write_json({str(path)!r}, {{"level": "x" * 5000}}, "feature store settings")
        except files.WriteError as error:
            print(error)
        """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == (f"cannot write feature store settings {path}: the file is larger than allowed "
                                  "(file-size limit); nothing was changed there"), run.stderr
    assert path.read_text() == '{"level": "video"}' and os.listdir(tmp_path) == ["settings.json"]
