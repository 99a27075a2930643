"""OpenAI CLIP's byte-level BPE tokenizer, bit-identical to `SimpleTokenizer` + `clip.tokenize`.

Offline and torch-free: the merges file (`bpe_simple_vocab_16e6.txt.gz`, MIT,
from openai/CLIP) ships in `vifi_jax/assets/`.
"""
import functools
import gzip
import html
import os

import ftfy
import numpy as np
import regex

VOCAB_PATH = os.path.join(os.path.dirname(__file__), "assets", "bpe_simple_vocab_16e6.txt.gz")
CONTEXT_LENGTH = 77
SOT = 49406  # <|startoftext|>
EOT = 49407  # <|endoftext|>, the largest id, so argmax(ids) finds it
# Lengths the text tower is cut to (see `truncate`); few distinct shapes, few recompiles.
LENGTH_BUCKETS = (8, 16, 24, 32, 48, 64, 77)
_NO_MERGE = float("inf")

_TOKEN_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def byte_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(mapping.items(), key=lambda item: (item[0] not in printable, item[0])))


def clean_text(text):
    """ftfy repair, double HTML unescape, whitespace collapse, lower case — OpenAI's order."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class Tokenizer:
    """Text <-> BPE ids with OpenAI's vocabulary (49408 entries)."""

    def __init__(self, vocab_path=VOCAB_PATH):
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.merge_rank = {pair: i for i, pair in enumerate(merges)}
        self._cache = {"<|startoftext|>": ["<|startoftext|>"], "<|endoftext|>": ["<|endoftext|>"]}

    def bpe(self, word):
        """Merge the symbols of one pre-token, lowest-ranked pair first, until no merge applies."""
        if word in self._cache:
            return self._cache[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            ranks = [self.merge_rank.get(pair, _NO_MERGE) for pair in zip(symbols, symbols[1:])]
            best = min(range(len(ranks)), key=ranks.__getitem__)
            if ranks[best] == _NO_MERGE:
                break
            first, second = symbols[best], symbols[best + 1]
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._cache[word] = symbols
        return symbols

    def encode(self, text):
        """Text -> BPE ids without SOT/EOT."""
        ids = []
        for piece in _TOKEN_PATTERN.findall(clean_text(text)):
            word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(word))
        return ids

    def decode(self, ids):
        text = "".join(self.decoder[i] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts, context_length=CONTEXT_LENGTH, truncate=False):
        """`clip.tokenize`: int32 [N, context_length], SOT + ids + EOT, zero padded.

        A text longer than the context raises, unless `truncate=True`, which keeps
        the first context_length-1 tokens and ends with EOT (as OpenAI does).
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [SOT] + self.encode(text) + [EOT]
            if len(ids) > context_length:
                if not truncate:
                    raise ValueError(
                        f"text {text[:80]!r} is {len(ids)} tokens with SOT/EOT, more than the context "
                        f"length {context_length}; shorten it or pass truncate=True")
                ids = ids[:context_length - 1] + [EOT]
            out[row, :len(ids)] = ids
        return out


@functools.lru_cache(maxsize=None)
def default_tokenizer():
    return Tokenizer()


def tokenize(texts, context_length=CONTEXT_LENGTH, truncate=False):
    """Tokenise with OpenAI's vocabulary: int32 [N, context_length]."""
    return default_tokenizer()(texts, context_length, truncate)


def truncated_length(token_ids, buckets=LENGTH_BUCKETS):
    """The smallest bucket that holds every row's EOT (the argmax of each row)."""
    needed = int(np.max(np.argmax(token_ids, axis=-1))) + 1
    for bucket in buckets:
        if bucket >= needed:
            return min(bucket, token_ids.shape[1])
    return token_ids.shape[1]


def truncate(token_ids, buckets=LENGTH_BUCKETS):
    """Drop the padding columns that no row needs; the text tower's output is unchanged.

    The causal mask keeps positions after EOT from reaching EOT, and pooling reads
    EOT, so features from `token_ids[:, :L]` equal those from all 77 columns.
    """
    token_ids = np.asarray(token_ids)
    return token_ids[:, :truncated_length(token_ids, buckets)]
