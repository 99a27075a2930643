"""List files and label CSVs in the official formats; the video-file source."""
import os

import numpy as np
import pytest

from data_pipelines import datasets, synthetic


def test_labels_are_quote_aware_and_ordered(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('id,name\n0,brush hair\n1,"Ride, horse"\n2,"say ""hi"""\n')
    assert datasets.read_labels(path) == ["brush hair", "Ride, horse", 'say "hi"']
    path.write_text("0,brush hair\n")
    with pytest.raises(datasets.DatasetError, match="header 'id,name'"):
        datasets.read_labels(path)
    path.write_text("id,name\n0,a\n2,b\n")
    with pytest.raises(datasets.DatasetError, match=r"labels.csv:3: ids must count up"):
        datasets.read_labels(path)
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.read_labels(tmp_path / "nope.csv")


def test_list_file_parsing_checks_labels_and_reports_missing_files(tmp_path, caplog):
    (tmp_path / "a.avi").write_bytes(b"x")
    (tmp_path / "dir with space").mkdir()
    (tmp_path / "dir with space" / "b.mp4").write_bytes(b"x")
    (tmp_path / "empty.mp4").write_bytes(b"")
    listing = tmp_path / "val.txt"
    listing.write_text("a.avi 0\n\ndir with space/b.mp4 2\nempty.mp4 1\ngone.webm 1\n")
    parsed = datasets.read_list_file(listing, str(tmp_path), num_classes=3, check_files=True)
    assert parsed.labels == (0, 2, 1, 1)
    assert parsed.paths[1] == str(tmp_path / "dir with space" / "b.mp4")
    assert f"2 of 4 videos in {listing} are missing or empty" in caplog.text
    assert f"{tmp_path / 'empty.mp4'}, {tmp_path / 'gone.webm'}" in caplog.text
    with pytest.raises(datasets.DatasetError, match=r"val.txt:3: label 2 is outside 0..1"):
        datasets.read_list_file(listing, str(tmp_path), num_classes=2)
    listing.write_text("a.avi zero\n")
    with pytest.raises(datasets.DatasetError, match=r"val.txt:1: expected '<relative path> <integer label>'"):
        datasets.read_list_file(listing)


def test_video_file_source_loads_sampled_frames(synthetic_videos):
    root, list_file, labels_csv = synthetic_videos
    names = datasets.read_labels(labels_csv)
    assert names == synthetic.class_names(4)
    source = datasets.VideoFileSource.from_list_file(list_file, root, num_classes=len(names))
    assert len(source) == 12
    frames, label = source.load(5, lambda n: np.arange(n)[::4])
    assert frames.shape == (4, 48, 64, 3) and label == 1  # 16 frames, every 4th; videos 3..5 are class 1


def test_text_files_with_a_bom_bad_labels_or_bad_bytes_get_clear_errors(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes("\ufeffid,name\n0,archery\n1,bowling\n".encode("utf-8"))
    assert datasets.read_labels(labels) == ["archery", "bowling"]  # a BOM is not part of the header
    listing = tmp_path / "list.txt"
    listing.write_bytes("\ufeffa.mp4 1\n".encode("utf-8"))
    assert datasets.read_list_file(listing, "/data").paths == ("/data/a.mp4",)  # nor of the first path
    for label in ("--5", "²", "-1", "1.0"):
        listing.write_text(f"a.mp4 {label}\n")
        with pytest.raises(datasets.DatasetError, match=r"list.txt:1: expected '<relative path> <integer label>'"):
            datasets.read_list_file(listing)
    listing.write_bytes(b"a.mp4 0\nb\xff.mp4 1\n")
    with pytest.raises(datasets.DatasetError, match=r"list.txt:2: not UTF-8 text \(byte 0xff\)"):
        datasets.read_list_file(listing)
    labels.write_text("id,name\n0,archery\n1,  \n")
    with pytest.raises(datasets.DatasetError, match=r"labels.csv:3: class 1 has a blank name"):
        datasets.read_labels(labels)
    labels.write_text("id,name\n0,archery\n1,bowling\n2,archery\n")
    with pytest.raises(datasets.DatasetError, match=r"labels.csv:4: class name 'archery' repeats class 0"):
        datasets.read_labels(labels)
    with pytest.raises(datasets.DatasetError, match=r"label file .* is a directory"):
        datasets.read_labels(tmp_path)


def test_list_file_entries_stay_under_the_root_unless_it_is_empty(tmp_path):
    """`../../etc/passwd` and `/proc/self/environ` are refused naming the line; a link inside the dataset
    tree may lead to another disk; with an empty root the user has asked for paths as written."""
    from data_pipelines import files
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "other_disk").mkdir()
    os.symlink(tmp_path / "other_disk", root / "more")
    listing = tmp_path / "list.txt"
    for entry, reason in (("../../../../etc/passwd", r"leads outside .* \(through '\.\.'\)"),
                          ("class0/../../x.mp4", "through '..'"), ("/proc/self/environ", "is an absolute path")):
        listing.write_text(f"class0/a.mp4 0\n{entry} 1\n")
        with pytest.raises(files.OutsideError, match=rf"list.txt:2: .*{reason}"):
            datasets.read_list_file(listing, str(root))
        assert datasets.read_list_file(listing, "").paths[1] == entry
    listing.write_text("more/b.mp4 0\n")
    assert datasets.read_list_file(listing, str(root)).paths == (os.path.join(root, "more/b.mp4"),)
