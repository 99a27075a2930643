"""Zero-shot text→video and video→text retrieval (R@1/5/10, median and mean rank, as CLIP4Clip reports).

    --config=configs/retrieval.py --config.retrieval.captions=MSRVTT_JSFUSION_test.csv --config.data.root=VIDEOS
    --config=configs/retrieval.py:smoke        a tiny random model on generated clips captioned by their class

Captions: a CSV with video_id and caption (or sentence) columns — MSR-VTT's 1k-A test split
(`MSRVTT_JSFUSION_test.csv`) is read as it is — or a JSON list of {"video", "caption"}; videos are
`data.root/<video_id><retrieval.video_suffix>`. Evaluates --config.model.init (default openai:ViT-B/16).
"""
import ml_collections

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, smoke=False)
    c = common.base_config()
    c.mode = "retrieval"
    c.retrieval = ml_collections.ConfigDict(dict(captions="", video_suffix=".mp4"))
    c.eval.sets = {"retrieval": common.eval_set("", "")}
    if arg.smoke:
        common.smoke(c)
        c.data.demo.num_classes, c.data.demo.videos_per_class = 8, 1  # one clip per caption
    return c
