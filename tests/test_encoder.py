"""encoder: texts in bounded chunks (10^5 class names must not become one allocation), and out-of-memory
errors recognised so that tools report them per input."""
import numpy as np
import pytest

from conftest import TINY, relative_error
from vifi_jax import api
from vifi_jax.runtime import encoder


def test_texts_are_encoded_in_chunks_of_a_bounded_number_of_rows(monkeypatch):
    model = api.init("ViT-B/16", seed=0, **TINY)
    names = [f"class number {i}" for i in range(11)]
    whole = np.asarray(model.encode_text(names))  # one chunk: 11 <= TEXT_CHUNK
    shapes, run = [], encoder.Encoder._run

    def spy(self, method, *inputs):
        shapes.append(inputs[0].shape)
        return run(self, method, *inputs)

    monkeypatch.setattr(encoder, "TEXT_CHUNK", 4)
    monkeypatch.setattr(encoder.Encoder, "_run", spy)
    chunked = np.asarray(model.encode_text(names))
    assert [shape[0] for shape in shapes] == [4, 4, 4]  # the last chunk padded to the same shape: one compile
    assert chunked.shape == whole.shape and relative_error(chunked, whole) <= 1e-5


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 13.90GiB."), True),
    (RuntimeError("INTERNAL: Failed to execute XLA Runtime executable: out of memory"), True),
    (MemoryError(), True),
    (RuntimeError("INVALID_ARGUMENT: shapes do not match"), False),
    (ValueError("RESOURCE_EXHAUSTED"), False)])
def test_out_of_memory_is_recognised(error, expected):
    assert encoder.out_of_memory(error) is expected
