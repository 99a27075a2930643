"""Hostile and broken inputs, generated, and a harness that feeds them to load, convert and predict.

    python tests/hostile.py make DIR            write every case under DIR (and DIR/cases.json)
    python tests/hostile.py run TOOL[,TOOL] DIR run each TOOL (load | convert | predict | search | tsne, ...)
                                                on every case for it, in one process under a 3 GiB
                                                address-space limit, each case under a time limit; prints one
                                                JSON line per case and tool: exit code, stderr, seconds, files
                                                written

Every case is a few bytes to a few MB that would, without the defences, crash the process, read out of
bounds, exhaust memory, hang, destroy a user's files, or give a silently wrong answer (NaN weights, a
manifest row that reads another video's features, a file outside the directory that names it). Each must end in one clear `error:` line, a
non-zero exit and nothing written. Nothing here is ever unpickled by Python's own unpickler.
"""
import functools
import json
import os
import struct
import sys
import zipfile

ADDRESS_SPACE = 3 << 30
TIME_LIMIT = 90


class Pickle:
    """A tiny protocol-2 pickle writer: opcodes spelled out, so a case says exactly what the file holds."""

    def __init__(self, protocol=2):
        self.parts = [bytes([0x80, protocol])]

    def op(self, code):
        self.parts.append(code)
        return self

    def glob(self, module, name):
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def str(self, text):
        data = text.encode()
        return self.op(b"X" + struct.pack("<I", len(data)) + data)

    def int(self, n):
        return self.op(b"J" + struct.pack("<i", n) if -2 ** 31 <= n < 2 ** 31 else b"\x8a\x08" + struct.pack("<q", n))

    def ints(self, values):
        self.op(b"(")
        for v in values:
            self.int(v)
        return self.op(b"t")

    def put(self, index):
        return self.op(b"q" + bytes([index]))

    def get(self, index):
        return self.op(b"h" + bytes([index]))

    def bytes(self):
        return b"".join(self.parts) + b"."


def tensor(p, key, numel, offset, size, stride, storage="FloatStorage"):
    """Push torch._utils._rebuild_tensor_v2(<storage key of numel>, offset, size, stride, False, OrderedDict())."""
    p.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    p.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"t").op(b"Q")
    p.int(offset).ints(size).ints(stride).op(b"\x89").glob("collections", "OrderedDict").op(b")R")
    return p.op(b"tR")


def state_dict_pickle(key, numel, offset, size, stride):
    p = Pickle().op(b"}").str("w")
    return tensor(p, key, numel, offset, size, stride).op(b"s").bytes()


def zip_checkpoint(path, data_pkl, storages=None, byteorder=None, compress_storage=False, compress_pickle=False):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl,
                         compress_type=zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED)
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw,
                             compress_type=zipfile.ZIP_DEFLATED if compress_storage else zipfile.ZIP_STORED)
        archive.writestr("archive/version", "3\n")
    return path


def legacy_checkpoint(path, numel, data_bytes):
    """torch < 1.6 layout: magic, protocol, sys info, object pickle, storage keys, then size + raw data."""
    magic = bytes([0x80, 2]) + b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."  # LONG1
    protocol = Pickle().int(1001).bytes()
    sys_info = Pickle().op(b"}").str("little_endian").op(b"\x88").op(b"s").bytes()
    objects = Pickle().op(b"}").str("w")
    objects.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
    objects.op(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(numel).op(b"N").op(b"t")
    objects.op(b"Q").int(0).ints([numel]).ints([1]).op(b"\x89").glob("collections", "OrderedDict").op(b")R")
    objects.op(b"tR").op(b"s")
    keys = Pickle().op(b"]").str("0").op(b"a").bytes()
    with open(path, "wb") as f:
        f.write(magic + protocol + sys_info + objects.bytes() + keys + struct.pack("<q", numel) + data_bytes)
    return path


def script_archive(path, data_pkl):
    return zip_checkpoint(path, data_pkl)


def cyclic_module():
    """A TorchScript object whose attribute is itself."""
    p = Pickle().glob("__torch__", "Loop").op(b")\x81").put(0).op(b"}").str("self").get(0).op(b"s").op(b"b")
    return p.bytes()


def shared_graph(levels=64):
    """Objects whose two attributes are the same child, 64 levels deep: 2^64 paths through 64 objects."""
    parts = [bytes([0x80, 2]), b"c__torch__\nLeaf\n)\x81}bq\x00"]
    for level in range(1, levels):
        child = b"h" + bytes([level - 1])
        parts.append(b"c__torch__\nNode\n)\x81}(X\x01\x00\x00\x00a" + child + b"X\x01\x00\x00\x00b" + child +
                     b"ubq" + bytes([level]))
    return b"".join(parts) + b"."


def class_flood(count=20_000):
    parts = [bytes([0x80, 2]), b"("]
    for i in range(count):
        parts.append(f"c__torch__.m{i}\nC\n".encode() + b")\x81")
    parts.append(b"l.")
    return b"".join(parts)


def build_on_function():
    p = Pickle().glob("torch._utils", "_rebuild_tensor_v2").op(b"N").op(b"}").str("__defaults__").ints([1, 2])
    return p.op(b"s").op(b"\x86").op(b"b").bytes()


def build_on_class():
    p = Pickle().glob("yacs.config", "CfgNode").op(b"N").op(b"}").str("__setstate__").glob("builtins", "set")
    return p.op(b"s").op(b"\x86").op(b"b").bytes()


def object_dtype_field():
    """numpy.dtype('f8') whose BUILD state adds an object field (the pointer-forging recipe)."""
    p = Pickle().op(b"}").str("x").glob("numpy.core.multiarray", "scalar")
    p.glob("numpy", "dtype").str("f8").op(b"\x89\x88\x87R")  # dtype("f8", False, True)
    p.op(b"(").int(3).str("|").op(b"N").op(b"(").str("a").op(b"t")  # state: (3, "|", None, ("a",), ...
    p.op(b"}").str("a").op(b"N").int(0).op(b"\x86").op(b"s")  # ... {"a": (<field dtype>, 0)}, ...
    p.int(8).int(1).int(63).op(b"t").op(b"b")  # ... 8, 1, 63), BUILD
    p.op(b"C\x08AAAAAAAA").op(b"\x86R").op(b"s")  # scalar(dtype, b"AAAAAAAA"): 0x4141414141414141
    return p.bytes()


def object_dtype_name():
    p = Pickle().op(b"}").str("x").glob("numpy", "dtype").str("O8").op(b"\x89\x88\x87R").op(b"s")
    return p.bytes()


def numpy_array():
    p = Pickle().glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray").ints([0])
    return p.op(b"C\x01b\x87R").bytes()


def bad_encoding():
    return Pickle().glob("_codecs", "encode").str("x").str("zlib_codec").op(b"\x86R").bytes()


def write_model_dir(directory, mutate_config=None, params=None):
    """A vifi_jax model directory of the tiny test model, its config changed by `mutate_config`."""
    from vifi_jax.weights import model_dir
    model = tiny_model()
    model_dir.save(directory, model.config, params if params is not None else model.params)
    if mutate_config:
        path = os.path.join(directory, "config.json")
        with open(path) as f:
            config = json.load(f)
        text = mutate_config(config)
        with open(path, "w") as f:
            f.write(text if isinstance(text, str) else json.dumps(config))
    return directory


@functools.lru_cache(maxsize=None)
def tiny_model(seed=0):
    """The tiny random model of `seed`, initialised once per process (16 cases use seed 0)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from conftest import TINY
    from vifi_jax import api
    return api.init("ViT-B/16", seed=seed, **TINY)


def damaged_params(path, value):
    """The tiny model's parameters with the first value of `path` (a vifi_jax parameter path) replaced."""
    import numpy as np
    from flax import traverse_util
    flat = {k: np.array(v) for k, v in traverse_util.flatten_dict(tiny_model().host_params, sep="/").items()}
    flat[path].reshape(-1)[0] = value
    return traverse_util.unflatten_dict(flat, sep="/")


def int64_safetensors(path):
    """A whole OpenAI-layout tiny CLIP whose positional embedding is int64 beyond float32's exact range."""
    import numpy as np
    from flax import traverse_util
    from safetensors.numpy import save_file
    from vifi_jax.weights import convert
    state = convert.flat_to_openai(traverse_util.flatten_dict(tiny_model().host_params, sep="/"))
    state["positional_embedding"] = np.full(state["positional_embedding"].shape, 2 ** 40, np.int64)
    save_file(state, path)
    return path


def sparse_safetensors(path, size=3 << 30):
    """A 4-byte tensor, then gigabytes of holes: the header does not cover the file."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.0))
        f.truncate(size)
    return path


def store_cases(root, good_model):
    """A feature store of two clips (one shard each) made with the good model, and broken copies of it:
    [(name, directory, expect, tools)]."""
    import shutil

    import numpy as np
    from data_pipelines import synthetic
    from vifi_jax import api, extract
    rng = np.random.default_rng(0)
    clips = []
    for i in range(2):
        clips.append(os.path.join(root, f"clip{i}.mp4"))
        synthetic.write_video(clips[-1], synthetic.render_clip(i, 8, 40, 48, rng))
    good = os.path.join(root, "store")
    extract.extract(api.load(good_model), clips, good, num_frames=2, shard_size=1)
    with open(os.path.join(good, "manifest.jsonl")) as f:
        first, second = f.read().splitlines()
    outside = os.path.join(root, "elsewhere.npy")
    np.save(outside, np.ones((1, 32), np.float32))
    shard = os.path.join(good, "features-p0-00001.npy")
    with open(shard, "rb") as f:
        shard_bytes = f.read()

    def copy(name, line=second, shard_maker=None, settings=None):
        directory = os.path.join(root, name)
        shutil.copytree(good, directory)
        with open(os.path.join(directory, "manifest.jsonl"), "w") as f:
            f.write(first + "\n" + line + "\n")
        if shard_maker:
            os.remove(os.path.join(directory, "features-p0-00001.npy"))
            shard_maker(os.path.join(directory, "features-p0-00001.npy"))
        if settings is not None:
            with open(os.path.join(directory, "settings.json"), "w") as f:
                f.write(settings)
        return directory

    def write(data):
        return lambda path: open(path, "wb").write(data)

    both = ("search", "tsne")
    other = os.path.join(root, "store_other_model")
    extract.extract(tiny_model(seed=5), clips, other, num_frames=2, shard_size=1)
    return [
        ("row_negative", copy("s_row_negative", second.replace('"row": 0', '"row": -2')), "line 2: 'row' must be", both),
        ("row_past_shard", copy("s_row_past", second.replace('"row": 0', '"row": 5')), "line 2: rows 5..5 are outside",
         both),
        ("manifest_not_json", copy("s_not_json", '{"video": "cut'), "line 2 is not JSON", both),
        ("manifest_no_key", copy("s_no_key", second.replace('"video"', '"clip"')), "line 2: an entry needs", both),
        ("manifest_up", copy("s_up", second.replace('"features-p0-00001.npy"', '"../store/features-p0-00001.npy"')),
         "line 2: 'file' must name a shard", both),
        ("manifest_absolute", copy("s_absolute", second.replace('"features-p0-00001.npy"', json.dumps(outside))),
         "line 2: 'file' must name a shard", both),
        ("shard_fifo", copy("s_fifo", shard_maker=os.mkfifo), "line 2: shard .* is a FIFO", both),
        ("shard_link_outside", copy("s_link", shard_maker=lambda p: os.symlink(outside, p)), "line 2: .* leads outside",
         both),
        ("shard_size_lie", copy("s_lie", shard_maker=write(shard_bytes[:-8])), "declares 128 bytes of data but holds 120",
         both),
        ("settings_empty", copy("s_settings_empty", settings=""), "settings .* is empty .* into a new --out", both),
        ("settings_huge_number", copy("s_settings_huge", settings='{"num_frames": ' + "7" * 5000 + "}"),
         "num_frames is a 5000-digit number", both),
        ("other_model", other, "exported with another model", ("search",)),
    ]


def make(root):
    """Write every case under `root`; returns [{name, path, tools, expect}] (expect: a regex of the error)."""
    os.makedirs(root, exist_ok=True)
    cases = []

    def case(name, path, expect, tools=("load", "convert", "predict")):
        cases.append({"name": name, "path": str(path), "expect": expect, "tools": list(tools)})

    def at(name):
        return os.path.join(root, name)

    one_float = {"0": struct.pack("<f", 1.0)}
    case("stride_out_of_storage", zip_checkpoint(at("stride.pth"), state_dict_pickle("0", 1, 0, [2], [10 ** 9]),
                                                 one_float), "reaches past its 1-element storage")
    case("numel_out_of_storage", zip_checkpoint(at("numel.pth"), state_dict_pickle("0", 1, 0, [50_000], [1]),
                                                one_float), "reaches past its 1-element storage")
    case("negative_stride", zip_checkpoint(at("negative.pth"), state_dict_pickle("0", 4, 3, [4], [-1]),
                                           {"0": bytes(16)}), "malformed")
    case("negative_offset", zip_checkpoint(at("offset.pth"), state_dict_pickle("0", 4, -2, [2], [1]),
                                           {"0": bytes(16)}), "malformed")
    case("stride_zero_3e9", zip_checkpoint(at("stride0.pth"), state_dict_pickle("0", 1, 0, [3 * 10 ** 9], [0]),
                                           one_float), "would exceed the memory")
    case("storage_larger_than_entry", zip_checkpoint(at("short_entry.pth"), state_dict_pickle(
        "0", 10 ** 9, 0, [10 ** 9], [1]), one_float), "declares 4 bytes where exactly")
    case("zip_bomb", zip_checkpoint(at("bomb.pth"), state_dict_pickle("0", 16 << 20, 0, [16 << 20], [1]),
                                    {"0": bytes(64 << 20)}, compress_storage=True), "compression bomb")
    case("object_dtype_field", zip_checkpoint(at("dtype_field.pth"), object_dtype_field()), "only plain numeric")
    case("object_dtype", zip_checkpoint(at("dtype_object.pth"), object_dtype_name()), "only plain numeric")
    case("numpy_array", zip_checkpoint(at("ndarray.pth"), numpy_array()), r"holds a numpy array")
    case("build_on_function", zip_checkpoint(at("build_function.pth"), build_on_function()),
         "tries to set the state of torch._utils._rebuild_tensor_v2")
    case("build_on_class", zip_checkpoint(at("build_class.pth"), build_on_class()),
         "tries to set the state of class ConfigNode")
    case("codec", zip_checkpoint(at("codec.pth"), bad_encoding()), "_codecs.encode with 'zlib_codec'")
    case("class_flood", zip_checkpoint(at("flood.pt"), class_flood(), compress_pickle=True),
         "more than 10000 TorchScript classes")
    case("cyclic_module", script_archive(at("cyclic.pt"), cyclic_module()), "contains a cycle")
    case("shared_graph", script_archive(at("shared.pt"), shared_graph()), "no CLIP parameters")
    case("legacy_short", legacy_checkpoint(at("legacy_short.pth"), 10 ** 9, b"\x00" * 16), "truncated or inconsistent")
    case("byteorder", zip_checkpoint(at("byteorder.pth"), state_dict_pickle("0", 1, 0, [1], [1]), one_float,
                                     byteorder="banana"), "byteorder is 'banana'")
    with open(at("half.pth"), "wb") as f:
        real = zip_checkpoint(at("whole.pth"), state_dict_pickle("0", 1024, 0, [1024], [1]), {"0": bytes(4096)})
        data = open(real, "rb").read()
        f.write(data[:len(data) // 2])
    case("zip_cut_in_half", at("half.pth"), "is a zip archive but truncated or corrupt")
    with open(at("zeros.pth"), "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GB of zeros that take no disk
    case("zeros_3gb", at("zeros.pth"), "not a PyTorch checkpoint")
    os.mkfifo(at("fifo.safetensors"))
    case("fifo_safetensors", at("fifo.safetensors"), "is a FIFO")
    os.mkfifo(at("fifo.pth"))
    case("fifo_pth", at("fifo.pth"), "is a FIFO")
    case("dev_zero", "/dev/zero", "is a device")
    case("model_layers", write_model_dir(at("md_layers"), lambda c: c.update(vision_layers=10 ** 6)),
         "vision_layers: 1000000 is outside")
    case("model_resolution", write_model_dir(at("md_resolution"), lambda c: c.update(image_resolution=100_000)),
         "image_resolution: 100000 is outside")
    case("model_heads", write_model_dir(at("md_heads"), lambda c: c.update(transformer_heads=0)),
         "transformer_heads: 0 is outside")
    case("model_types", write_model_dir(at("md_types"), lambda c: c.update(embed_dim="32")),
         "embed_dim: '32' is not an integer")
    case("model_missing", write_model_dir(at("md_missing"), lambda c: c.pop("vocab_size")), "vocab_size: missing")
    case("model_json", write_model_dir(at("md_json"), lambda c: "{not json"), "is not valid JSON")
    case("model_shapes", write_model_dir(at("md_shapes"), lambda c: c.update(embed_dim=16)),
         "parameters do not match config.json")
    case("model_huge_number", write_model_dir(at("md_huge"), lambda c: json.dumps(c)[:-1] + ', "vision_layers": '
                                              + "9" * 5000 + "}"), "vision_layers is a 5000-digit number")
    case("model_nan", write_model_dir(at("md_nan"), params=damaged_params("visual/proj", float("nan"))),
         r"non-finite values \(NaN or infinity\) in visual/proj")
    case("model_logit_scale_huge", write_model_dir(at("md_scale"), params=damaged_params("logit_scale", 1e4)),
         r"logit_scale is 10000, .* outside \[0, ln 200\]")
    case("model_logit_scale_inf", write_model_dir(at("md_scale_inf"), params=damaged_params("logit_scale", float("inf"))),
         "non-finite values .* in logit_scale")
    linked = write_model_dir(at("md_link"))
    import shutil
    shutil.rmtree(os.path.join(linked, "params"))
    os.symlink(os.path.join(write_model_dir(at("md_link_target")), "params"), os.path.join(linked, "params"))
    case("model_link_inside", linked, "params is a symbolic link")
    case("int64_beyond_float32", int64_safetensors(at("int64.safetensors")),
         "positional_embedding is a int64 tensor with values beyond")
    case("safetensors_sparse_tail", sparse_safetensors(at("sparse.safetensors")),
         r"the tensors cover 4 of the file's \d+ data bytes")

    # videos, through predict (the model is a good one)
    os.mkfifo(at("fifo.mp4"))
    with open(at("concat.mp4"), "w") as f:
        f.write(f"ffconcat version 1.0\nfile {at('fifo.mp4')}\n")
    with open(at("playlist.m3u8"), "w") as f:
        f.write(f"#EXTM3U\n#EXTINF:1,\n{at('concat.mp4')}\n")
    import cv2
    import numpy as np
    writer = cv2.VideoWriter(at("huge.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 1, (8192, 8192))
    writer.write(np.zeros((8192, 8192, 3), np.uint8))
    writer.release()
    newline = at("evil\n  forged label  99.99%.mp4")
    with open(newline, "wb") as f:
        f.write(b"not a video")
    for name, path, expect in (("concat_to_fifo", at("concat.mp4"), "cannot open it"),
                               ("playlist", at("playlist.m3u8"), "cannot open it"),
                               ("huge_frames", at("huge.avi"), "frames are 8192x8192"),
                               ("fifo_video", at("fifo.mp4"), "is a FIFO"),
                               ("directory_video", root, "is a directory"),
                               ("newline_name", newline, "cannot open it")):
        cases.append({"name": name, "path": path, "expect": expect, "tools": ["predict_video"]})

    # destinations, through convert (the source is a good model directory)
    good = write_model_dir(at("good_model"))
    user = at("user_files")
    os.makedirs(user)
    with open(os.path.join(user, "thesis.tex"), "w") as f:
        f.write("years of work")
    for name, destination, expect in (("user_directory", user, "is not a vifi_jax model directory"),
                                      ("existing_model", at("good_model"), "pass --overwrite"),
                                      ("unknown_suffix", at("out.npz"), "unknown destination type")):
        cases.append({"name": name, "path": good, "destination": destination, "expect": expect,
                      "tools": ["convert_destination"]})
    for name, directory, expect, tools in store_cases(root, good):
        cases.append({"name": name, "path": directory, "expect": expect, "tools": list(tools)})
    with open(os.path.join(root, "cases.json"), "w") as f:
        json.dump({"cases": cases, "good_model": good}, f, indent=1)
    return cases


def _limit():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _listing(root):
    found = set()
    for directory, _, names in os.walk(root):
        found.update(os.path.join(directory, n) for n in names)
    return found


def run(tools, root):
    """Run each of `tools` on every case for it, in this process (limited), one JSON line per case and tool
    on stdout."""
    import contextlib
    import io
    import signal
    import time

    with open(os.path.join(root, "cases.json")) as f:
        spec = json.load(f)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from absl import flags
    from vifi_jax import api, predict
    from vifi_jax import convert as convert_command
    from vifi_jax import search
    from vifi_jax import tsne as tsne_command
    commands = {"search": search, "tsne": tsne_command}
    programs = [predict if tool.startswith("predict") else commands.get(tool) for tool in tools]
    for program in dict.fromkeys(p for p in programs if p is not None):  # each program's flags once
        program.define_flags()
    _limit()

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {TIME_LIMIT} s")

    signal.signal(signal.SIGALRM, on_alarm)
    for tool, case in ((tool, case) for tool in tools for case in spec["cases"]):
        if tool not in case["tools"]:
            continue
        output = os.path.join(root, f"out-{case['name']}")
        before = _listing(root)
        stderr, stdout = io.StringIO(), io.StringIO()
        start, code = time.time(), 0
        signal.alarm(TIME_LIMIT)
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
                if tool == "load":
                    try:
                        api.load(case["path"])
                    except Exception as error:  # noqa: BLE001 - what the library raises is what is judged
                        print(f"{type(error).__name__}: {error}", file=sys.stderr)
                        code = 1
                elif tool == "convert":
                    convert_command.run([case["path"], output])
                elif tool == "convert_destination":
                    convert_command.run([case["path"], case["destination"]])
                elif tool in commands:
                    argv = [tool, f"--features={case['path']}", *(
                        [f"--weights={spec['good_model']}", "--query=a clip"] if tool == "search" else
                        [f"--out={output}.png"])]
                    flags.FLAGS.unparse_flags()
                    remaining = flags.FLAGS(argv)
                    from data_pipelines import cli
                    cli.guarded(commands[tool].main)(remaining)
                else:
                    weights = spec["good_model"] if tool == "predict_video" else case["path"]
                    videos = [case["path"]] if tool == "predict_video" else [os.path.join(root, "huge.avi")]
                    argv = ["predict", f"--weights={weights}", "--labels=a,b", "--num_frames=2", *videos]
                    flags.FLAGS.unparse_flags()
                    remaining = flags.FLAGS(argv)
                    from data_pipelines import cli
                    cli.guarded(predict.main)(remaining)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException as error:  # noqa: BLE001 - a crash of the harness's case is a failed case
            code, stderr = 99, io.StringIO(f"HARNESS: {type(error).__name__}: {error}")
        finally:
            signal.alarm(0)
        written = sorted(_listing(root) - before)
        print(json.dumps({"tool": tool, "name": case["name"], "code": code, "stderr": stderr.getvalue(),
                          "stdout": stdout.getvalue(), "seconds": round(time.time() - start, 2),
                          "written": written, "expect": case["expect"]}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "run":
        run(sys.argv[2].split(","), sys.argv[3])
    else:
        sys.exit(__doc__)
