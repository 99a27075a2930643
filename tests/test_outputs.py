"""outputs: a run writes only where it may (claim), one run per directory (Lock), replacements in one step
(swap_in), and what a killed writer left is cleaned (clean_leftovers)."""
import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from data_pipelines import outputs


def listing(directory):
    return {name: open(os.path.join(directory, name)).read() for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("place", ["/", "home", "above_home"])
def test_root_home_and_their_parents_are_refused(place, tmp_path, monkeypatch):
    home = tmp_path / "users" / "ada"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    directory = {"/": "/", "home": str(home), "above_home": str(tmp_path / "users")}[place]
    with pytest.raises(outputs.OutputError, match="root directory|home directory"):
        outputs.claim(directory, "run", "--workdir")
    assert os.listdir(home) == []


def test_a_foreign_directory_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "config.json").write_text('{"mine": true}')  # a name a run writes, but not a run's file
    with pytest.raises(outputs.OutputError, match=r"is not empty \(config.json, thesis.tex\) and was not made"):
        outputs.claim(tmp_path, "run", "--workdir")
    assert listing(tmp_path) == {"config.json": '{"mine": true}', "thesis.tex": "years of work"}


def test_new_and_empty_directories_are_claimed_and_marked_with_their_kind(tmp_path):
    new = tmp_path / "a" / "b"
    outputs.claim(new, "run", "--workdir")
    assert json.loads((new / outputs.MARKER).read_text())["kind"] == "run"
    assert outputs.is_claimed(new, "run") and not outputs.is_claimed(new, "features")
    (new / "results.json").write_text("{}")
    outputs.claim(new, "run", "--workdir")  # a rerun of the same kind continues
    with pytest.raises(outputs.OutputError, match="made by a vifi_jax run, not a features"):
        outputs.claim(new, "features", "--out")
    empty = tmp_path / "empty"
    empty.mkdir()
    outputs.claim(empty, "features", "--out")
    assert outputs.is_claimed(empty, "features")


def test_a_file_a_broken_marker_and_legacy_directories(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(outputs.OutputError, match="exists and is not a directory"):
        outputs.claim(tmp_path / "file", "run", "--workdir")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / outputs.MARKER).write_text("")
    with pytest.raises(ValueError, match=r"vifi_jax marker .*\.vifi_jax\.json is empty"):
        outputs.claim(broken, "run", "--workdir")
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text("{}")
    seen = []
    outputs.claim(old, "run", "--workdir", legacy=lambda d, names: seen.append(names) or names == ["results.json"])
    assert seen == [["results.json"]] and outputs.is_claimed(old, "run")


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    with outputs.Lock(str(tmp_path), "--workdir"):
        held = json.loads((tmp_path / outputs.LOCK).read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(outputs.OutputError, match=rf"in use by another vifi_jax run \(process {os.getpid()} on "):
            with outputs.Lock(str(tmp_path), "--workdir"):
                pass
        assert (tmp_path / outputs.LOCK).exists()  # the refused one did not remove the holder's lock
    assert not (tmp_path / outputs.LOCK).exists()


def test_a_crashed_runs_lock_is_taken_over_but_another_hosts_is_not(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / outputs.LOCK).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                                     "started": "yesterday"}))
    with caplog.at_level(logging.WARNING), outputs.Lock(str(tmp_path), "--workdir"):
        assert json.loads((tmp_path / outputs.LOCK).read_text())["pid"] == os.getpid()
    assert f"stale lock {tmp_path / outputs.LOCK} of process {gone.pid}" in caplog.text
    (tmp_path / outputs.LOCK).write_text(json.dumps({"pid": gone.pid, "host": "another-host", "started": "now"}))
    with pytest.raises(outputs.OutputError, match=rf"process {gone.pid} on another-host.*delete .*\.vifi_jax\.lock"):
        with outputs.Lock(str(tmp_path), "--workdir"):
            pass
    (tmp_path / outputs.LOCK).write_text("{cut")  # unreadable: never taken over silently
    with pytest.raises(outputs.OutputError, match="an unknown process"):
        with outputs.Lock(str(tmp_path), "--workdir"):
            pass


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_replaces_a_directory_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # systems without renameat2: the old one is set aside, then replaced
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    destination, staging = tmp_path / "model", tmp_path / "model.partial-1"
    destination.mkdir()
    (destination / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    outputs.swap_in(str(staging), str(destination))
    assert listing(destination) == {"new": "new"} and sorted(os.listdir(tmp_path)) == ["model"]
    staging.write_text("file")
    outputs.swap_in(str(staging), str(tmp_path / "fresh"))
    assert (tmp_path / "fresh").read_text() == "file"


def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    destination = tmp_path / "model"
    dead = tmp_path / f"model.partial-{gone.pid}"
    dead.mkdir()
    (dead / "params").write_text("half")
    live = tmp_path / f"model.partial-{os.getppid()}"
    live.write_text("being written")
    (tmp_path / "model.partial-notes").write_text("a user's file")
    with caplog.at_level(logging.WARNING):
        assert outputs.clean_leftovers(str(destination)) == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == [live.name, "model.partial-notes"]
    assert f"removed {dead}" in caplog.text and f"{live} is being written by process {os.getppid()}" in caplog.text
