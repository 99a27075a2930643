"""TensorBoard summaries: written without importing what tensorboardX would import for torch tensors and its
own bucket writers (bucket event files: tests/test_storage.py)."""
import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_NEEDED = ("torch", "google.cloud.storage")  # both installed with requirements-dev.txt


def test_the_writer_imports_neither_torch_nor_a_cloud_client(tmp_path):
    assert all(importlib.util.find_spec(name) for name in NOT_NEEDED)  # else this test would prove nothing
    code = ("import sys; from vifi_jax.train import summaries; w = summaries.writer(sys.argv[1]); "
            "w.add_scalar('train/loss', 1.0, 1); w.close(); "
            f"print([name for name in {NOT_NEEDED!r} if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    assert len(os.listdir(tmp_path / "tensorboard")) == 1
