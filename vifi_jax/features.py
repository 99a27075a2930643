"""The feature store: what `extract` writes and `search` and `tsne` read, in one place.

A store is a directory holding
  settings.json        how the features were made (level, frames, windows, dtype, shard size, the model's
                       CLIP fields), so a reader can encode a query the same way and a rerun continues only
                       what the same settings wrote;
  features-pP-NNNNN.npy  shards of L2-normalised rows, `shard_size` inputs each, written by process P;
  manifest.jsonl       one JSON object per input, in input order: {"video" (or "text"), "file", "row",
                       "rows", ...} for rows [row, row + rows) of shard `file`, or {"video", "error"}.
Every process appends its entries to manifest-pP.partial.jsonl as its shards finish (a rerun continues after
the last whole shard); process 0 then merges them into manifest.jsonl and removes the partial files.
Reading checks every manifest line (keys, shard names, row ranges, feature widths) and names the line that
is wrong.
"""
import dataclasses
import json
import re

import numpy as np

from data_pipelines import files, outputs, storage

MANIFEST = "manifest.jsonl"
SETTINGS = "settings.json"
LEVELS = ("video", "frame", "window")
_SHARD = re.compile(r"^features-p\d+-\d{5}\.npy$")


class FeatureStoreError(ValueError):
    """A feature directory that cannot be written or read as asked."""


def shard_name(process, index):
    return f"features-p{process}-{index:05d}.npy"


def _partial(out, process):
    return storage.join(out, f"manifest-p{process}.partial.jsonl")


def read_settings(directory):
    path = storage.join(directory, SETTINGS)
    if not storage.exists(path):
        raise FeatureStoreError(f"{directory} has no {SETTINGS}: not a feature directory written by "
                                "`python -m vifi_jax.extract`")
    settings = files.read_json(path, "feature store settings", "export the features again into a new --out")
    if not isinstance(settings, dict):
        raise FeatureStoreError(f"{path} is not a JSON object; export the features again into a new --out")
    return settings


def _legacy(directory, names):
    """An unmarked store an earlier vifi_jax wrote: only a store's own files, and its settings readable."""
    own = re.compile(r"^(settings\.json|manifest\.jsonl|manifest-p\d+\.partial\.jsonl|features-p\d+-\d{5}\.npy)$")
    if SETTINGS not in names or not all(own.match(name) for name in names):
        return False
    try:
        read_settings(directory)
    except (OSError, ValueError):
        return False
    return True


def claim(out):
    """Make `out` a feature store of this export (process 0; the others wait): new, empty, or a store."""
    import jax  # writing only: reading a store (search, tsne) starts without jax
    if jax.process_index() == 0:
        outputs.claim(out, "features", "--out", _legacy)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("vifi_jax.features: the store is claimed")


def _entries_of(path):
    """The entries of a partial manifest; a line cut by a kill ends it (it and what follows are redone)."""
    if not storage.exists(path):
        return []
    entries = []
    with files.open_text(path, "partial manifest") as f:
        for line in f:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return entries


def lock(out):
    """One export at a time into `out` (held by process 0 of a job)."""
    import contextlib

    import jax
    return outputs.Lock(out, "--out") if jax.process_index() == 0 else contextlib.nullcontext()


class Writer:
    """This process's part of a store: the entries already finished (whole shards whose files exist), then
    `add_shard` per shard and `finish` once every process has written its part."""

    def __init__(self, out, settings, inputs, key="video"):
        import jax
        self.out, self.key = out, key
        self.process, self.count = jax.process_index(), jax.process_count()
        claim(out)  # already claimed by a caller that also locks it: a no-op then
        self._check_settings(json.loads(json.dumps(settings)))
        self.shard_size = settings["shard_size"]
        self.mine = list(range(self.process, len(inputs), self.count))
        entries = self._finished_entries()
        missing = [i for i, e in enumerate(entries) if "file" in e and not storage.exists(storage.join(out, e["file"]))]
        kept = missing[0] if missing else len(entries)
        self.done = entries[:kept // self.shard_size * self.shard_size]
        if any(e.get(key) != inputs[i] for e, i in zip(self.done, self.mine)):
            raise FeatureStoreError(f"{out} holds features of other inputs; use another --out")
        self._lines = [json.dumps(e) + "\n" for e in self.done]
        self._write_partial(self._lines, "w")

    def _write_partial(self, lines, mode):
        """The partial manifest, rewritten ("w") or added to ("a"). A bucket has no append: the whole object
        is uploaded again, in one request, so a kill leaves the previous version or this one."""
        path = _partial(self.out, self.process)
        if storage.is_remote(path):
            with files.atomic_write(path, "partial manifest") as f:
                f.writelines(self._lines)
            return
        with open(path, mode) as f:
            f.writelines(lines)

    def _finished_entries(self):
        """This process's entries from its partial manifest, or (an export that finished) from the manifest."""
        partial, manifest = _partial(self.out, self.process), storage.join(self.out, MANIFEST)
        if storage.exists(partial) or not storage.exists(manifest):
            return _entries_of(partial)
        return _entries_of(manifest)[self.process::self.count]

    def _check_settings(self, settings):
        path = storage.join(self.out, SETTINGS)
        if storage.exists(path):
            saved = read_settings(self.out)
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if changed:
                raise FeatureStoreError(f"{self.out} holds features made with other settings ({', '.join(changed)} "
                                        "differ); use another --out, or the same settings to continue it")
        elif self.process == 0:
            files.write_json(path, settings, "feature store settings")

    def pending(self):
        """[(shard index, input indices)] still to do, in order."""
        start = len(self.done)
        return [(k // self.shard_size, self.mine[k:k + self.shard_size])
                for k in range(start, len(self.mine), self.shard_size)]

    def add_shard(self, index, entries, rows, dtype):
        """Write one shard's rows (atomically) and then its entries; `entries` name the rows they own."""
        name = shard_name(self.process, index)
        for entry in entries:
            if "rows" in entry:
                entry["file"] = name
        if rows:
            with files.atomic_write(storage.join(self.out, name), "feature shard", "wb") as f:
                np.save(f, np.concatenate(rows).astype(dtype))
        lines = [json.dumps(e) + "\n" for e in entries]
        self._lines += lines
        self._write_partial(lines, "a")

    def finish(self, total):
        """Merge every process's entries into manifest.jsonl (process 0) in input order; returns them."""
        if self.count > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("vifi_jax.features: every process wrote its part")
        parts = [_entries_of(_partial(self.out, p)) for p in range(self.count)]
        entries = [parts[i % self.count][i // self.count] for i in range(total)]
        if self.process == 0:
            with files.atomic_write(storage.join(self.out, MANIFEST), "manifest") as f:
                f.writelines(json.dumps(e) + "\n" for e in entries)
        if self.count > 1:
            multihost_utils.sync_global_devices("vifi_jax.features: the manifest is written")
        outputs.remove(_partial(self.out, self.process))
        return entries


@dataclasses.dataclass
class Store:
    """A read store: its settings, the readable entries (errors left out) and their rows."""
    settings: dict
    entries: list
    features: np.ndarray  # [sum of rows, D] float32, entry i's rows at offsets[i]:offsets[i + 1]
    offsets: np.ndarray

    def rows_of(self, i):
        return self.features[self.offsets[i]:self.offsets[i + 1]]


def read(directory, level=None):
    """The store in `directory`, checked line by line; `level` ("video", ...) must match its settings."""
    settings = read_settings(directory)
    if level and settings.get("level") != level:
        raise FeatureStoreError(f"{directory} holds {settings.get('level')}-level features; this needs "
                                f"--level={level} features (python -m vifi_jax.extract --level={level})")
    path = storage.join(directory, MANIFEST)
    if not storage.exists(path):
        raise FeatureStoreError(f"{directory} has no {MANIFEST}: export features first with "
                                "`python -m vifi_jax.extract --out=DIR VIDEO...` (or finish the export)")
    entries, shards, blocks = [], {}, []
    with files.open_text(path, "manifest") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise FeatureStoreError(f"{where} is not JSON ({error})") from None
            if not isinstance(entry, dict) or not ({"video", "text"} & set(entry)):
                raise FeatureStoreError(f"{where}: an entry needs a 'video' or 'text' key")
            if "error" in entry:
                continue
            block = _block(directory, entry, where, shards)
            entries.append(entry)
            blocks.append(block)
    if not entries:
        raise FeatureStoreError(f"{path} lists no readable features")
    widths = {b.shape[1] for b in blocks}
    if len(widths) > 1:
        raise FeatureStoreError(f"{path}: features of different widths {sorted(widths)} in one store")
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])])
    return Store(settings, entries, np.concatenate(blocks).astype(np.float32), offsets)


def _block(directory, entry, where, shards):
    file, row, rows = entry.get("file"), entry.get("row"), entry.get("rows")
    if not isinstance(file, str) or not _SHARD.match(file):
        raise FeatureStoreError(f"{where}: 'file' must name a shard of this directory (features-pP-NNNNN.npy), "
                                f"got {file!r}")
    if type(row) is not int or type(rows) is not int or row < 0 or rows < 1:
        raise FeatureStoreError(f"{where}: 'row' must be an integer >= 0 and 'rows' >= 1, got {row!r}, {rows!r}")
    if file not in shards:
        try:
            path = files.inside(directory, file, where)
        except files.OutsideError as error:
            raise FeatureStoreError(str(error)) from None
        try:
            shards[file] = files.load_npy(path, "shard")
        except (OSError, ValueError) as error:
            raise FeatureStoreError(f"{where}: {error}") from None
    shard = shards[file]
    if row + rows > len(shard):
        raise FeatureStoreError(f"{where}: rows {row}..{row + rows - 1} are outside shard {file}'s {len(shard)} rows")
    return np.asarray(shard[row:row + rows])
