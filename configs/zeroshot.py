"""Zero-shot: K400 training, and evaluation on HMDB-51, UCF-101 and K600 (three splits, mean ± std).

    --config=configs/zeroshot.py                   offline demo: generated clips, openai:ViT-B/16 if cached
    --config=configs/zeroshot.py:hmdb              zero-shot eval, splits 1-3 (also ucf, k600)
    --config=configs/zeroshot.py:train             ViFi-CLIP K400 training, 32 frames, 10 epochs
    --config=configs/zeroshot.py:train,use=image   CLIP image-FT (use=text: text-FT)
    append ,smoke for a tiny random model on generated clips (seconds on a CPU)

Evaluation loads --config.model.init (the K400 checkpoint; vanilla CLIP with --config.text_mode=bare).
"""
from configs import common

EVAL_SETS = {
    "hmdb": ("hmdb_splits/val{}.txt", "hmdb_51_labels.csv", 51),
    "ucf": ("ucf_splits/val{}.txt", "ucf_101_labels.csv", 101),
    "k600": ("k600_splits/ZS_split{}_K600_eval.txt", "ZS_split{}_K600.csv", 160),
}


def get_config(arg=None):
    arg = common.parse_arg(arg, demo=False, train=False, use="both", hmdb=False, ucf=False, k600=False, smoke=False)
    c = common.base_config()
    c.data.num_frames = 32
    if arg.train:
        c.mode = "train"
        c.data.train_file, c.data.labels = "datasets_splits/k400_splits/train.txt", "labels/kinetics_400_labels.csv"
        c.data.num_classes = 400
        c.train.use = arg.use
        c.train.epochs, c.train.warmup_epochs, c.train.lr = 10, 5, 8e-6
        c.train.accumulation_steps = 8  # 32 x 8 = 256
        c.eval.sets = {"val": common.eval_set("datasets_splits/k400_splits/val.txt", "labels/kinetics_400_labels.csv")}
        c.checkpoint.every_steps = 500
    else:
        c.mode = "zeroshot"
        chosen = [name for name in EVAL_SETS if arg[name]]
        if len(chosen) > 1:
            raise ValueError("pick one of hmdb, ucf, k600 per run")
        if chosen:
            list_file, labels, _ = EVAL_SETS[chosen[0]]
            c.eval.sets = {f"split{s}": common.eval_set(f"datasets_splits/{list_file.format(s)}",
                                                        f"labels/{labels.format(s)}") for s in (1, 2, 3)}
        else:  # the embedded default: runs offline on a fresh machine in a few CPU minutes
            c.data.source = "demo"
            c.data.num_frames = 8
            c.data.num_workers = 2
            c.data.demo.num_frames = 32
            c.model.allow_random_init = True
            c.eval.sets = {"demo": common.eval_set("", "")}
    if arg.smoke:
        common.smoke(c, num_sets=None)
    return c
