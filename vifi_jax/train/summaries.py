"""TensorBoard summaries of a run (process 0 writes them): tensorboardX's event files, written through
`data_pipelines.storage` when the workdir is in a bucket, as every other file of a run is.

tensorboardX imports torch, boto3 and google-cloud-storage when they are installed, to accept torch tensors
and to write s3:// and gs:// itself: torch 1.8 s and google-cloud-storage 0.2 s of every run's start. The
scalars here are floats, and `storage` makes the bucket writes (the run's credentials, the same errors, and
gcs:// too, which tensorboardX wrote into a local folder named "gcs:"), so they are imported as if absent.
"""
import io
import sys

import jax

from data_pipelines import storage

_NOT_NEEDED = ("torch", "boto3", "google.cloud.storage")


class _BucketEventFile:
    """One event file in a bucket, uploaded whole on each flush (a bucket object cannot be appended to);
    tensorboardX flushes every two minutes and on close."""

    def __init__(self, path):
        self.path, self.buffer, self.uploaded = path, io.BytesIO(), -1

    def write(self, data):
        self.buffer.write(data)

    def flush(self):
        """Uploads the file only if it grew since its last upload: closing flushes twice, quiet minutes none."""
        if self.buffer.tell() != self.uploaded:
            storage.write_bytes(self.path, self.buffer.getvalue())
            self.uploaded = self.buffer.tell()

    def close(self):
        self.flush()


class _BucketEventFiles:
    """tensorboardX's writer factory for a bucket scheme."""

    def open(self, path):
        return _BucketEventFile(path)

    def directory_check(self, path):
        """Buckets have no folders to make."""


def _summary_writer_class():
    hidden = [name for name in _NOT_NEEDED if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))  # None: an import of it fails as if it were not installed
    try:
        from tensorboardX import SummaryWriter, record_writer
    finally:
        for name in hidden:
            del sys.modules[name]
    for scheme in storage.SCHEMES:
        record_writer.register_writer_factory(scheme.removesuffix("://"), _BucketEventFiles())
    return SummaryWriter


def writer(workdir):
    """A SummaryWriter for `workdir`/tensorboard on process 0; None on the others."""
    if jax.process_index() != 0:
        return None
    return _summary_writer_class()(storage.join(workdir, "tensorboard"))
