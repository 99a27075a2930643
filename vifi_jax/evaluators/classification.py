"""Classification evaluation: class texts encoded once per run, every video's views scored, softmax summed
over views; metrics in percent plus the counts behind them, per configured set."""
import logging
import time

from vifi_jax.evaluators import metrics, scoring
from vifi_jax.models import vifi
from vifi_jax.runtime import data, encoder

log = logging.getLogger(__name__)


def evaluate(enc, split, spec, batch_size, mesh, text_ids, num_workers=0, seed=0, normalize_kind="imagenet"):
    """Metrics dict for one Split (see vifi_jax.runtime.data) with the views of `spec`; shows a progress bar.
    `enc`: a `runtime.encoder.Encoder`; `text_ids`: the token ids of the split's class texts."""
    text = enc.text_features(text_ids)
    start = time.time()
    scores, labels, _, unreadable = scoring.score_views(enc, split.source, spec, text, batch_size, mesh,
                                                        metrics.aggregate_views, num_workers, seed, normalize_kind,
                                                        f"eval {split.description}")
    result = metrics.accuracy(scores, labels, len(split.class_names))
    result.update(videos=len(split.source), evaluated=len(labels), views=spec.num_views, unreadable=unreadable,
                  seconds=time.time() - start)
    return result


class ClassificationEvaluator:
    """Top-1/top-5/mean-class accuracy on every `eval.sets` entry with num_clips x num_crops views."""

    def __init__(self, config, mesh, num_clips, num_crops):
        self.config, self.mesh = config, mesh
        self.spec = data.clip_spec(config, False, num_clips, num_crops)
        self.splits = data.eval_splits(config)

    def run(self, module, params, out=None):
        """{set name: metrics} for the model `module` with `params` (placed on the mesh); filled into `out`
        set by set, so an interrupted run still has the sets it finished."""
        c, enc = self.config, encoder.Encoder(module, params)
        out = {} if out is None else out
        for name, split in self.splits.items():
            ids = vifi.class_token_ids(split.class_names, c.text_mode, module.learned_text_prompts)
            out[name] = evaluate(enc, split, self.spec, c.eval.batch_size, self.mesh, ids, c.data.num_workers,
                                 c.seed, c.data.normalize)
            log.info("eval %s (%d views): top1 %.2f top5 %.2f mean-class %.2f on %d/%d videos", name,
                     self.spec.num_views, out[name]["top1"], out[name]["top5"], out[name]["mean_class"],
                     out[name]["evaluated"], out[name]["videos"])
        return out

    best_metric = "top1"

    @staticmethod
    def headline(found):
        """The number the best model is kept by: one set's top-1."""
        return found["top1"]

    @staticmethod
    def summary(found):
        return metrics.summarize_sets(found)
