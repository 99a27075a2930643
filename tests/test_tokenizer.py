"""The tokenizer against OpenAI's SimpleTokenizer and clip.tokenize, bit for bit."""
import numpy as np
import pytest

from vifi_jax import tokenizer

UCF = ["ApplyEyeMakeup", "ApplyLipstick", "BalanceBeam", "BlowDryHair", "CleanAndJerk", "HandstandPushups",
       "JumpingJack", "PlayingDaf", "SkyDiving", "YoYo", "WallPushups", "Skijet"]
SSV2 = ["Approaching something with your camera", "Pretending to put something on a surface",
        'Putting something that can\'t roll onto a slanted surface, so it stays where it is',
        "Pushing something so that it slightly moves", "Tipping something with something in it over, "
        "so something in it falls out"]
ODD = ["Café déjà vu — naïve façade", "日本語のテキストと中文", "emoji 🎉🔥👍🏽 party", "&amp;lt;b&amp;gt;bold&lt;/b&gt;",
       "  tabs\tand\nnew lines  ", "I'm sure you'll've been there'd", "mojibake: Ã©tÃ©", "numbers 1234 and 3.14",
       "<|startoftext|> inline specials <|endoftext|>", "ALL CAPS SHOUTING", "", "a" * 500,
       "x " * 200, "don't-stop_me now!!!", "\u00a0non\u2009breaking\u200bspace"]
TEXTS = UCF + SSV2 + ODD + [f"a photo of a {name}." for name in UCF + SSV2]


def reference_tokenize(ref, texts, context_length=77, truncate=False):
    """clip.tokenize, restated without torch."""
    sot, eot = ref.encoder["<|startoftext|>"], ref.encoder["<|endoftext|>"]
    out = np.zeros((len(texts), context_length), np.int64)
    for i, text in enumerate(texts):
        tokens = [sot] + ref.encode(text) + [eot]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length}")
            tokens = tokens[:context_length]
            tokens[-1] = eot
        out[i, :len(tokens)] = tokens
    return out


def test_encode_matches_openai_on_varied_text(openai_tokenizer):
    ours = tokenizer.Tokenizer()
    for text in TEXTS:
        assert ours.encode(text) == openai_tokenizer.encode(text), text


def test_vocabulary_and_decode_match_openai(openai_tokenizer):
    ours = tokenizer.Tokenizer()
    assert ours.encoder == openai_tokenizer.encoder
    assert ours.encoder["<|startoftext|>"] == tokenizer.SOT and ours.encoder["<|endoftext|>"] == tokenizer.EOT
    for text in SSV2 + ODD[:4]:
        ids = ours.encode(text)
        assert ours.decode(ids) == openai_tokenizer.decode(ids)


def test_tokenize_matches_clip_tokenize(openai_tokenizer):
    short = [t for t in TEXTS if len(openai_tokenizer.encode(t)) <= 75]
    np.testing.assert_array_equal(tokenizer.tokenize(short), reference_tokenize(openai_tokenizer, short))
    assert tokenizer.tokenize(short).dtype == np.int32
    np.testing.assert_array_equal(tokenizer.tokenize(TEXTS, truncate=True),
                                  reference_tokenize(openai_tokenizer, TEXTS, truncate=True))


def test_overflow_raises_a_clear_error_unless_truncating():
    with pytest.raises(ValueError, match="more than the context length 77.*truncate=True"):
        tokenizer.tokenize(["x " * 76])
    ids = tokenizer.tokenize(["x " * 76], truncate=True)
    assert ids[0, -1] == tokenizer.EOT and ids[0, 0] == tokenizer.SOT
    assert tokenizer.tokenize("x " * 75).shape == (1, 77)


def test_single_string_and_custom_context_length():
    ids = tokenizer.tokenize("a photo of a dog.", context_length=16)
    assert ids.shape == (1, 16)
    assert list(ids[0, :8]) == [tokenizer.SOT, 320, 1125, 539, 320, 1929, 269, tokenizer.EOT]
