"""OpenAI's published CLIP weights: download once into a cache, verified by SHA-256.

The expected digest is the second-to-last component of each URL, as in OpenAI's
own `clip.load`. A cached file whose digest does not match is fetched again;
a download whose digest does not match is deleted and raises.
"""
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request

OPENAI_MODELS = {
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/"
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/"
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
}


def cache_dir():
    """`$VIFI_JAX_CACHE`, else `~/.cache/vifi_jax`."""
    return os.environ.get("VIFI_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vifi_jax"))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def openai_weights(model, urls=None, root=None):
    """Path of OpenAI's `model` checkpoint in the cache, downloaded and verified on first use."""
    urls = OPENAI_MODELS if urls is None else urls
    if model not in urls:
        raise ValueError(f"unknown OpenAI CLIP model {model!r}; known: {', '.join(urls)}")
    url = urls[model]
    expected = url.split("/")[-2]
    root = root or cache_dir()
    target = os.path.join(root, "openai", os.path.basename(url))
    if os.path.isfile(target):
        if sha256(target) == expected:
            return target
        print(f"{target}: SHA-256 mismatch, downloading again", file=sys.stderr)
    if os.environ.get("VIFI_JAX_OFFLINE"):
        raise ConnectionError(f"{model} is not in the cache ({target}) and VIFI_JAX_OFFLINE forbids downloading it")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:
            shutil.copyfileobj(src, out, 1 << 20)
    except OSError as e:
        os.unlink(partial)
        raise ConnectionError(f"cannot download {model} from {url} ({e}); place the file at {target} "
                              "or pass a local checkpoint path instead") from e
    actual = sha256(partial)
    if actual != expected:
        os.unlink(partial)
        raise ValueError(f"download of {model} from {url} has SHA-256 {actual}, expected {expected}; "
                         "the file was discarded")
    os.replace(partial, target)
    return target
