"""Shared pieces of the experiment configs: the official defaults, argument parsing, smoke variants.

Defaults follow ViFi-CLIP's `utils/config.py` (see README "Configs"); batch sizes are global per
micro-batch (the official 4 per GPU × 8 GPUs), so that iterations per epoch, and with them the
learning-rate schedule, match the reference run.
"""
import ml_collections

from data_pipelines import sampling

TINY_MODEL = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                  context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                  transformer_layers=2)


DATASET_NAMES = ("hmdb51", "ucf101", "k400", "k600", "ssv2")
OLD_DATASET_NAMES = {"hmdb": "hmdb51", "ucf": "ucf101"}  # earlier spellings, still accepted


def dataset_name(name, offered):
    """The one spelling of a dataset (`DATASET_NAMES`), checked against what a config offers."""
    name = OLD_DATASET_NAMES.get(name, name)
    if name not in offered:
        raise ValueError(f"dataset={name!r}: this config offers {', '.join(offered)}")
    return name


def parse_arg(arg, **defaults):
    """big_vision style 'key=value,flag' → ConfigDict over `defaults` (a bare word sets a bool to True)."""
    result = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(defaults)}")
        default = defaults[key]
        if not _:
            value = True
        elif isinstance(default, bool):
            value = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            value = int(value)
        result[key] = value
    return result


def eval_set(list_file, labels, tfds_split=""):
    """An evaluation set: an official list file and label CSV, or (data.source=tfds) a TFDS split name."""
    return ml_collections.ConfigDict(dict(list_file=list_file, labels=labels, tfds_split=tfds_split))


def base_config():
    c = ml_collections.ConfigDict()
    c.mode = "train"  # train | eval | zeroshot
    c.task = "classification"  # classification (class texts) | retrieval (captions: configs/retrieval.py)
    c.seed = 1024
    c.text_mode = "auto"  # auto: prompt for models with text prompts, else template | template: "a photo of a {}."
    #                       | bare: "{}" (vanilla CLIP zero-shot) | prompt: through the learned text prompts
    c.model = ml_collections.ConfigDict(dict(
        init="openai:ViT-B/16",  # anything vifi_jax.load accepts, or random:<variant>
        clip_weights="",  # OpenAI weights for official ViFi-CLIP .pth files (their token embedding)
        allow_random_init=False,  # fall back to random weights (with a loud warning) if init is unavailable
        fields=ml_collections.ConfigDict(),  # CLIP field overrides for random:<variant>
        vision_prompts=0, vision_prompt_depth=0, text_prompts=0, text_prompt_depth=0,
        dtype="float32",  # compute dtype; parameters stay float32
        remat=False))
    c.data = ml_collections.ConfigDict(dict(
        source="files",  # files (official list files) | tfds | demo (generated clips)
        splits_dir=".",  # where the official datasets_splits/ and labels/ are (a clone of ViFi-CLIP)
        root="",  # DATA.ROOT: prefix of the paths in the list files
        train_file="", labels="", num_classes=0,
        tfds_name="", tfds_data_dir="", tfds_train_split="train",
        num_frames=sampling.NUM_FRAMES, input_size=224, normalize="imagenet",
        augment_on="device",  # device: flip/jitter/grayscale in the train step (host draws them) | host (reference)
        num_workers=-1,  # loader processes; -1: one per usable core, less one (pipeline.auto_workers)
        check_files=True, max_bad_fraction=0.01,
        demo=ml_collections.ConfigDict(dict(num_classes=8, videos_per_class=4, video_frames=32, height=128,
                                            width=170))))
    c.train = ml_collections.ConfigDict(dict(
        use="both",  # both | image | text | prompts: which parameters train
        epochs=30, warmup_epochs=5.0, lr=8e-6, min_lr_ratio=0.01,  # warmup: epochs, may be a fraction
        weight_decay=1e-3, b1=0.9, b2=0.98, eps=1e-8,
        batch_size=32, accumulation_steps=1,
        reference_world_size=8,  # GPUs of the official run: iterations per epoch are counted as its loader did
        label_smoothing=0.1, mixup=True, mixup_alpha=0.8, cutmix_alpha=1.0, mixup_switch_prob=0.5,
        max_steps=-1))  # stop early after this many updates (-1: the full schedule)
    c.eval = ml_collections.ConfigDict(dict(
        every_epochs=1,  # SAVE_FREQ: after epochs 1, 1 + every, 1 + 2 every, ... and the last (as officially)
        best_set="",  # the set whose top-1 picks best/ ("": the first)
        batch_size=16, num_clips=1, num_crops=1,
        final_num_clips=1, final_num_crops=1,  # views of the evaluation after training
        sets=ml_collections.ConfigDict()))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=3, async_save=True))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    c.log_every = 50
    return c


def finish(c, arg, num_prompts, depth, prompt_lr):
    """The arguments every training config shares: `use=` (what fine-tuning trains), `prompting`
    (bridge-and-prompt with these prompts and LR instead) and `smoke`."""
    if arg.prompting and arg.use != "both":
        raise ValueError("use= picks what fine-tuning trains; prompting trains only the prompts")
    c.train.use = arg.use
    if arg.prompting:
        prompting(c, num_prompts, depth, prompt_lr)
    if arg.smoke:
        smoke(c)
    return c


def prompting(c, num_prompts, depth, lr):
    """Bridge-and-prompt: deep prompts on both towers, everything else frozen, from a K400 checkpoint."""
    c.model.init = ""  # must be set: the K400 ViFi-CLIP checkpoint
    c.model.vision_prompts = c.model.text_prompts = num_prompts
    c.model.vision_prompt_depth = c.model.text_prompt_depth = depth
    c.train.use, c.train.lr = "prompts", lr
    return c


def smoke(c, num_sets=None):
    """Shrink a config to a tiny random model on generated clips: minutes of work become seconds."""
    c.model.init = "random:ViT-B/16"
    c.model.allow_random_init = False
    c.model.fields = ml_collections.ConfigDict(TINY_MODEL)
    c.data.source = "demo"
    c.data.num_frames, c.data.input_size, c.data.num_workers = 4, 32, 0
    c.data.demo = ml_collections.ConfigDict(dict(num_classes=4, videos_per_class=4, video_frames=12, height=40,
                                                 width=48))
    c.train.epochs, c.train.warmup_epochs = 2, 1
    c.train.batch_size = 4
    c.train.reference_world_size = 1
    c.train.accumulation_steps = min(c.train.accumulation_steps, 2)
    c.eval.batch_size = 4
    c.eval.final_num_clips = min(c.eval.final_num_clips, 2)
    names = list(c.eval.sets.keys()) or ["val"]
    c.eval.sets = ml_collections.ConfigDict({name: eval_set("", "") for name in names[:num_sets]})
    c.checkpoint.every_steps = 2
    c.log_every = 1
    return c
