"""Evaluation arithmetic: views → class scores, top-k, mean per-class accuracy, HM, mean ± std."""
import numpy as np


def aggregate_views(logits):
    """logits [B, V, C] -> softmax per view summed over views [B, C] (the official multi-view rule)."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).sum(axis=1)


def accuracy(scores, labels, num_classes=None):
    """{"top1", "top5", "mean_class", "count", "per_class_top1"} in percent, from scores [N, C] and labels [N];
    per_class_top1[c] is None for a class without videos."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    num_classes = num_classes or scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    top1 = order[:, 0] == labels
    top5 = (order[:, :min(5, scores.shape[1])] == labels[:, None]).any(axis=1)
    per_class = [100 * float(top1[labels == c].mean()) if (labels == c).any() else None for c in range(num_classes)]
    return {"top1": 100 * float(top1.mean()), "top5": 100 * float(top5.mean()),
            "mean_class": float(np.mean([a for a in per_class if a is not None])), "count": int(len(labels)),
            "per_class_top1": per_class}


def summarize_sets(found):
    """{set: metrics} -> base/novel sets: their harmonic mean. Several other sets (e.g. the three zero-shot
    splits): mean ± std of top-1, with the std's convention named in the result."""
    if "base" in found and "novel" in found:
        return {"harmonic_mean": harmonic_mean(found["base"]["top1"], found["novel"]["top1"])}
    if len(found) > 1:
        mean, std = mean_std([m["top1"] for m in found.values()])
        return {"top1_mean": mean, "top1_std": std, "std": STD_CONVENTION}
    return {}


def harmonic_mean(base, novel):
    return 2 * base * novel / (base + novel) if base + novel else 0.0


STD_CONVENTION = "population (ddof=0): sqrt(mean((x - mean)^2))"


def mean_std(values):
    """Mean and population standard deviation (np.std, ddof=0), e.g. over the three zero-shot splits.

    The paper does not say which it reports; with 3 splits the sample std is sqrt(3/2) = 1.22x larger."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std())
