"""Hostile and broken files (tests/hostile.py) through load, convert and predict, and broken feature stores
through search and tsne, under a memory and a time limit: each ends in one clear error, a non-zero exit and nothing written; none crashes, hangs or runs out
of memory, and no user file is touched."""
import json
import os
import re
import subprocess
import sys

import pytest

import hostile

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.xdist_group("hostile")  # one worker builds the cases once (--dist loadgroup)
TOOLS = ("load", "convert", "predict", "predict_video", "convert_destination", "search", "tsne")


@pytest.fixture(scope="session")  # not module: a worker that runs another file's test in between would rebuild it
def results(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hostile"))
    cases = hostile.make(root)
    run = subprocess.run([sys.executable, os.path.join(HERE, "hostile.py"), "run", ",".join(TOOLS), root],
                         capture_output=True, text=True, timeout=1200)  # one process: imports paid once
    assert run.returncode == 0, f"the harness itself died (a crash?):\n{run.stderr[-3000:]}"
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    found = {tool: [r for r in lines if r["tool"] == tool] for tool in TOOLS}
    for tool in TOOLS:
        assert [r["name"] for r in found[tool]] == [c["name"] for c in cases if tool in c["tools"]], tool
    return root, found


def failures(entries, where):
    bad = []
    for r in entries:
        text = r[where]
        problems = [p for p, failed in (
            ("exit status 0", r["code"] == 0), ("harness crash", r["code"] == 99),
            (f"no {r['expect']!r}", not re.search(r["expect"], text)), ("traceback", "Traceback" in r["stderr"]),
            (f"wrote {r['written']}", bool(r["written"])), ("slow", r["seconds"] > 30)) if failed]
        if problems:
            bad.append(f"{r['name']}: {', '.join(problems)}; stderr: {r['stderr'][-400:]!r}")
    return bad


@pytest.mark.parametrize("tool", ["load", "convert", "predict"])
def test_hostile_checkpoints_end_in_one_clear_error(results, tool):
    _, found = results
    assert not failures(found[tool], "stderr")
    if tool != "load":  # the command-line tools: exactly one line, `error: ...`, exit status 1
        for r in found[tool]:
            lines = r["stderr"].strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and r["code"] == 1, r


def test_hostile_videos_are_per_video_errors_and_forge_no_lines(results):
    _, found = results
    assert not failures(found["predict_video"], "stdout")
    for r in found["predict_video"]:
        assert r["code"] == 1 and "error:" in r["stdout"]
        assert not any(line.startswith("  forged") for line in r["stdout"].splitlines()), r["stdout"]


def test_destructive_destinations_are_refused_and_user_files_survive(results):
    root, found = results
    assert not failures(found["convert_destination"], "stderr")
    with open(os.path.join(root, "user_files", "thesis.tex")) as f:
        assert f.read() == "years of work"
    assert sorted(os.listdir(os.path.join(root, "user_files"))) == ["thesis.tex"]


@pytest.mark.parametrize("tool", ["search", "tsne"])
def test_broken_feature_stores_are_one_error_naming_the_line_or_file(results, tool):
    """Rows out of range (−2 included), broken lines, shards that are FIFOs, links or lies, settings cut
    short, another model's store: one `error:` line, exit status 1, never another video's features."""
    _, found = results
    assert found[tool] and not failures(found[tool], "stderr")
    for r in found[tool]:
        lines = r["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and r["code"] == 1 and r["stdout"] == "", r
