"""Every file the package reads, and every folder it writes, fails clearly.

Real files in their real formats are broken the way disks and users break
them (truncated, corrupt, text for binary, binary for text, a folder in
the way, a forged cache entry) and read back through the public entry
points: each failure must be one error naming the file
(:class:`FileNotFoundError` or
:class:`~dsolo_sk.exceptions.UnreadableFileError`), never a decoder's raw
exception, and nothing in a file is ever executed.
"""

import io
import json
import os
import pickle
import shutil
import struct
import sys
import warnings
import zlib

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from dsolo_sk.datasets import (load_class_names, load_dataset, read_image,
                               read_label_map, write_fake_dataset)
from dsolo_sk.exceptions import UnreadableFileError, UnwritableFolderError
from dsolo_sk.features import FeatureExtractor
from dsolo_sk.features._cache import load_count
from dsolo_sk.features._images import check_images
from dsolo_sk.model_selection import (FeatureCache, clear_feature_cache,
                                      feature_cache_info)

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)

#: calls of Columns.compute_logits in this process
CALLS = []


class Columns:
    """A deterministic stand-in for CLIP: class k scores column band k."""

    def compute_logits(self, image, classes):
        CALLS.append(1)
        x = np.linspace(-1, 1, 4, dtype=np.float32)
        grid = np.tile(x, (3, 1)) * (image.mean() / 255.0 + 0.5)
        return np.stack([grid * (1 if k % 2 else -1)
                         for k in range(len(classes))])


def _extractor():
    return FeatureExtractor(logits=Columns(), affinity=False,
                            classes=["left", "right"], progress=False)


def _png_bytes(array, **save_kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save_kwargs)
    return buf.getvalue()


def _png_header_only(width, height):
    """A PNG declaring `width` x `height` pixels with almost no data: the
    shape of a decompression bomb."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                         0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


# -- images ---------------------------------------------------------------------
BAD_IMAGES = {
    "truncated.png": lambda: _png_bytes(PHOTO)[:80],
    "truncated.jpg": lambda: _jpeg_bytes(PHOTO)[:300],
    "garbage.jpg": lambda: b"\xff\xd8\xff\xe0 not really a jpeg" * 3,
    "text.png": lambda: b"hello, world\n" * 20,
    "empty.png": lambda: b"",
    "bomb.png": lambda: _png_header_only(30000, 30000),
    "large.png": lambda: _png_header_only(10000, 10000),  # PIL only warns
}


def _jpeg_bytes(array, **save_kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95, **save_kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_a_bad_image_file_is_one_error_naming_it(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(BAD_IMAGES[name]())
    loads = load_count()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning leaks either
        readers = [read_image, lambda p: _extractor().transform([p])]
        if not name.startswith("truncated"):
            # the cheap check before any model loads reads headers only
            readers.append(lambda p: check_images([p]))
        for read in readers:
            with pytest.raises(UnreadableFileError) as err:
                read(str(path))
            assert name in str(err.value) and "as an image" in str(err.value)
            assert isinstance(err.value, ValueError)
            assert err.value.path == str(path)
    if name in ("bomb.png", "large.png"):
        assert "MAX_IMAGE_PIXELS" in str(err.value)
    assert load_count() == loads


def test_a_folder_or_missing_file_as_an_image(tmp_path):
    with pytest.raises(UnreadableFileError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        _extractor().transform([str(tmp_path / "nothing.png")])


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 ("rotate 90 degrees
    clockwise to display") is read upright, as OpenCV reads it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.png"
    path.write_bytes(_png_bytes(PHOTO, exif=exif))
    upright = np.rot90(PHOTO, k=-1)
    np.testing.assert_array_equal(read_image(path), upright)
    [ds] = _extractor().transform([str(path)])
    np.testing.assert_array_equal(ds["image"].values, upright)
    # the cheap header check agrees with the decoded size
    from dsolo_sk.features._images import image_size

    assert image_size(str(path)) == upright.shape[:2] == (20, 12)


ODD_MODES = {
    # mode -> (how to build it from PHOTO, the RGB it must read as)
    "I;16": (lambda: Image.fromarray(
        (PHOTO[..., 0].astype(np.uint16) * 257)),
        lambda: np.repeat(PHOTO[..., :1], 3, axis=2)),
    "LA": (lambda: Image.fromarray(PHOTO[..., 0]).convert("LA"),
           lambda: np.repeat(PHOTO[..., :1], 3, axis=2)),
    "RGBA": (lambda: Image.fromarray(np.dstack([PHOTO, PHOTO[..., :1]])),
             lambda: PHOTO),
    "1": (lambda: Image.fromarray(PHOTO[..., 0] > 127),
          lambda: np.repeat((PHOTO[..., :1] > 127) * np.uint8(255), 3, 2)),
}


def test_odd_pil_modes_are_read_as_rgb(tmp_path):
    """16-bit grayscale is scaled to 8 bits (not clipped at 255), alpha is
    dropped, bilevel is black and white, CMYK and LAB are converted."""
    for mode, (build, expected) in ODD_MODES.items():
        path = tmp_path / f"{mode.replace(';', '_')}.png"
        build().save(path)
        assert Image.open(path).mode == mode
        np.testing.assert_array_equal(read_image(path), expected(),
                                      err_msg=mode)
    cmyk = Image.fromarray(PHOTO).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "cmyk.tif"),
                                  np.asarray(cmyk.convert("RGB")))
    lab = Image.fromarray(PHOTO).convert("LAB")
    lab.save(tmp_path / "lab.tif")
    assert read_image(tmp_path / "lab.tif").shape == PHOTO.shape


def test_palette_with_transparency_reads_without_a_warning(tmp_path):
    img = Image.fromarray(PHOTO).convert("P")
    img.info["transparency"] = bytes(range(256))
    path = tmp_path / "palette.png"
    img.save(path, transparency=bytes(range(256)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_image(path)
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGBA"))[
        ..., :3])


def test_masks(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(PHOTO[..., 0] > 127).save(path)  # a bilevel mask
    np.testing.assert_array_equal(read_label_map(path),
                                  (PHOTO[..., 0] > 127).astype(np.uint8))
    Image.fromarray(PHOTO).save(path)
    with pytest.raises(UnreadableFileError, match="mask.png.*RGB image"):
        read_label_map(path)
    path.write_bytes(_png_bytes(PHOTO[..., 0])[:60])
    with pytest.raises(UnreadableFileError, match="mask.png.*as a mask"):
        read_label_map(path)


# -- class files and split files ----------------------------------------------
@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    ("sky\ncaf\xe9\n".encode("latin-1"), r"\(line 2\) is not valid UTF-8"),
    (b"Cat\ndog\n  cat \n", "cannot tell apart"),
    (b"cat\n,\n", "line 2"),
])
def test_a_bad_class_file_names_the_file(content, match, tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=match) as err:
        load_class_names(path)
    assert "classes.txt" in str(err.value)


def test_a_class_file_with_a_bom_and_crlf(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes("\ufeffsky, cloud\r\ncat\r\n".encode("utf-8"))
    assert load_class_names(path) == ["sky, cloud", "cat"]


def test_a_split_file_listing_an_image_twice_is_refused(tmp_path):
    root = write_fake_dataset("voc21", tmp_path, n_images=3)
    ds = load_dataset("voc21", root)
    split = os.path.join(ds.root, "ImageSets", "Segmentation", "val.txt")
    with open(split, "a", encoding="utf-8") as f:
        f.write(ds.ids[1] + "\n")
    with pytest.raises(UnreadableFileError,
                       match=rf"{ds.ids[1]}' twice \(lines 2 and 4\)") as err:
        load_dataset("voc21", root)
    assert "val.txt" in str(err.value)
    with open(split, "wb") as f:
        f.write(b"\x00\x01binary")
    with pytest.raises(UnreadableFileError, match="val.txt.*binary"):
        load_dataset("voc21", root)


# -- model configs and checkpoints ---------------------------------------------
def _broken_copies(good, tmp_path):
    data = open(good, "rb").read()
    suffix = os.path.splitext(good)[1]
    out = {}
    for kind, content in (("text", b"these are not weights\n" * 40),
                          ("truncated", data[:len(data) // 3]),
                          ("header", data[:20]), ("empty", b"")):
        path = tmp_path / f"{kind}{suffix}"
        path.write_bytes(content)
        out[kind] = str(path)
    return out


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_a_broken_clip_checkpoint_names_the_file(fmt, tiny_clip_files,
                                                 tmp_path):
    import torch
    from safetensors.torch import load_file

    from dsolo_sk.features import CLIPFeatures

    good = tiny_clip_files["checkpoint"]
    if fmt == "torch":
        torch.save(load_file(good), tmp_path / "good.pt")
        good = str(tmp_path / "good.pt")
    loads = load_count()
    for kind, path in _broken_copies(good, tmp_path).items():
        clip = CLIPFeatures(tiny_clip_files["config"], path, short_side=32,
                            templates=["{}"], device="cpu")
        with pytest.raises(UnreadableFileError, match="open_clip checkpoint"
                           ) as err:
            clip.compute_logits(PHOTO, ["cat", "dog"])
        assert os.path.basename(path) in str(err.value), kind
    assert load_count() == loads


@pytest.mark.parametrize("content, match", [
    (b"{\"embed_dim\": 16,", "invalid JSON at line 1"),
    (b"[1, 2, 3]", "lacks"),
    (b"{\"embed_dim\": 16}", r"lacks \['vision_cfg', 'text_cfg'\]"),
    (b"\x00\x00\x00", "binary"),
])
def test_a_broken_clip_config_names_the_file(content, match, tmp_path,
                                             tiny_clip_files):
    from dsolo_sk.features import CLIPFeatures

    path = tmp_path / "broken-config.json"
    path.write_bytes(content)
    with pytest.raises(UnreadableFileError, match=match) as err:
        FeatureExtractor(logits=CLIPFeatures(str(path), None),
                         affinity=False, classes=["a", "b"]).fit()
    assert "broken-config.json" in str(err.value)
    # the broken file was not registered with open_clip: the other models
    # still load
    import open_clip

    assert "broken-config" not in open_clip.list_models()
    assert tiny_clip_files["name"] in open_clip.list_models()


def test_a_broken_local_clip_folder(tiny_clip_files, tmp_path):
    from dsolo_sk.features import CLIPFeatures

    folder = tmp_path / "model"
    shutil.copytree(tiny_clip_files["local_dir"], folder)
    (folder / "open_clip_config.json").write_text('{"preprocess_cfg": {}}')
    with pytest.raises(UnreadableFileError, match="model_cfg"):
        CLIPFeatures(str(folder)).compute_logits(PHOTO, ["a", "b"])


@pytest.mark.parametrize("part, content, match", [
    ("unet/config.json", b"{oops", "invalid JSON"),
    ("vae/config.json", b"[1, 2]", "JSON list, not an object"),
    ("unet/diffusion_pytorch_model.safetensors", b"text\n" * 50,
     "safetensors header"),
    ("vae/diffusion_pytorch_model.safetensors", None, "truncated"),
])
def test_a_broken_diffusers_folder_names_the_file(part, content, match,
                                                  tiny_sd_dir_no_text,
                                                  tmp_path):
    from dsolo_sk.features import DiffusionAttention

    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir_no_text, folder)
    target = folder / part
    if content is None:
        content = target.read_bytes()[:2000]
    target.write_bytes(content)
    sd = DiffusionAttention(str(folder), resolution=32,
                            text_embedding="zeros", device="cpu")
    with pytest.raises(UnreadableFileError, match=match) as err:
        sd.compute_affinity(PHOTO, (2, 2))
    assert str(target) in str(err.value)


# -- output folders ------------------------------------------------------------
def _unwritable(tmp_path):
    """Paths that cannot become output folders, whoever runs the tests."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    paths = {"a file": str(a_file), "below a file": str(a_file / "sub")}
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        paths["a read-only file system"] = "/proc/self/dsolo_sk_out"
    return paths


def test_evaluate_checks_its_output_folder_before_any_image(tmp_path):
    from dsolo_sk.evaluation import evaluate

    ds = load_dataset("voc20", write_fake_dataset("voc20", tmp_path / "d"))
    calls = []

    def segmenter(image):
        calls.append(1)
        return np.ones((20,) + image.shape[:2])

    for what, out in _unwritable(tmp_path).items():
        with pytest.raises(UnwritableFolderError, match="out=") as err:
            evaluate(segmenter, ds, out=out, progress=False)
        assert err.value.path == out, what
    assert calls == []


def test_the_cli_checks_out_before_loading_a_model(tmp_path, capsys):
    from dsolo_sk.cli import main

    image = tmp_path / "photo.png"
    Image.fromarray(PHOTO).save(image)
    loads = load_count()
    for what, out in _unwritable(tmp_path).items():
        assert main(["segment", str(image), "--classes", "a,b", "--out",
                     out, "--pretrained", "none"]) == 1, what
        err = capsys.readouterr().err
        assert "--out=" in err and out in err, what
    root = write_fake_dataset("voc20", tmp_path / "d")
    out = _unwritable(tmp_path)["a file"]
    assert main(["evaluate", "--dataset", "voc20", "--root", root, "--out",
                 out, "--pretrained", "none"]) == 1
    assert "cannot be used as an output folder" in capsys.readouterr().err
    assert load_count() == loads


def test_a_template_file_that_is_binary(tmp_path, capsys):
    from dsolo_sk.cli import main

    image = tmp_path / "photo.png"
    Image.fromarray(PHOTO).save(image)
    templates = tmp_path / "templates.txt"
    templates.write_bytes(b"\x00\x01\x02")
    assert main(["segment", str(image), "--classes", "a,b", "--out",
                 str(tmp_path / "o"), "--templates", str(templates),
                 "--pretrained", "none"]) == 1
    assert "templates.txt" in capsys.readouterr().err


# -- the feature cache on disk ---------------------------------------------------
class _Payload:
    """Creates a file when unpickled: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["zip", "legacy", "local_dir"])
def test_a_pickle_checkpoint_is_refused_naming_the_file_and_safe_formats(
        layout, tiny_clip_files, tmp_path):
    """A torch checkpoint holding an object that would run code when
    unpickled: torch's weights_only loader refuses it, and the error names
    the file and the formats that are read safely, not torch's advice to
    retry with weights_only=False."""
    import torch

    from dsolo_sk.features import CLIPFeatures

    marker = tmp_path / "pwned"
    state = {"visual.proj": _Payload(str(marker))}
    model, pretrained = tiny_clip_files["config"], None
    if layout == "local_dir":
        folder = tmp_path / "local_dir"
        shutil.copytree(tiny_clip_files["local_dir"], folder)
        os.remove(folder / "open_clip_model.safetensors")
        path = folder / "open_clip_pytorch_model.bin"
        torch.save(state, path)
        model = str(folder)
    else:
        path = tmp_path / f"evil_{layout}.pt"
        if layout == "zip":
            torch.save(state, path)
        else:
            path.write_bytes(pickle.dumps(state, protocol=2))
        pretrained = str(path)
    clip = CLIPFeatures(model, pretrained, short_side=32, templates=["{}"],
                        device="cpu")
    with pytest.raises(UnreadableFileError, match="open_clip checkpoint"
                       ) as err:
        clip.compute_logits(PHOTO, ["cat", "dog"])
    message = str(err.value)
    assert str(path) in message
    assert "safetensors" in message and "weights_only=True" in message
    assert "Weights only load failed" not in message
    assert not marker.exists()


def _entries(store):
    folder = store / "dsolo_sk_features"
    return sorted(folder / f for f in os.listdir(folder))


def test_feature_cache_never_unpickles_a_file_of_its_folder(tmp_path):
    store = tmp_path / "store"
    marker = tmp_path / "pwned"
    cache = FeatureCache(_extractor(), memory=str(store))
    clear_feature_cache()
    CALLS.clear()
    [first] = cache.transform([PHOTO])
    [entry] = _entries(store)
    payload = pickle.dumps(_Payload(str(marker)))
    # the entry itself, and the names earlier versions used
    entry.write_bytes(payload)
    for suffix in (".pkl", ".pickle", ".joblib"):
        entry.with_suffix(suffix).write_bytes(payload)
    clear_feature_cache()
    with pytest.warns(UserWarning, match="unusable entry"):
        [again] = cache.transform([PHOTO])
    assert not marker.exists()
    assert len(CALLS) == 2  # recomputed
    xr.testing.assert_identical(first, again)
    # and written back as a valid entry, served from disk from now on
    clear_feature_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.transform([PHOTO])
    assert len(CALLS) == 2 and feature_cache_info()["hits"] == 1
    assert not marker.exists()


def _npz_with_object_array(path, marker):
    # an .npz member holding a pickled object array
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(marker)
    np.savez(path, __manifest__=arr)


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    # the last data byte before the zip directory: inside an array
    pos = data.rfind(b"PK\x01\x02") - 1
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "object array": lambda path, other, marker: _npz_with_object_array(
        path, marker),
    "truncated": lambda path, other, marker: path.write_bytes(
        path.read_bytes()[:200]),
    "empty": lambda path, other, marker: path.write_bytes(b""),
    "flipped byte": lambda path, other, marker: _flip_last_byte(path),
    "another key's entry": lambda path, other, marker: shutil.copy(
        other, path),
    "random bytes": lambda path, other, marker: path.write_bytes(
        RNG.bytes(5000)),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_bad_feature_cache_entry_is_recomputed(kind, tmp_path):
    store = tmp_path / "store"
    marker = tmp_path / "pwned"
    cache = FeatureCache(_extractor(), memory=str(store))
    clear_feature_cache()
    images = [PHOTO, 255 - PHOTO]
    first = cache.transform(images)
    entries = _entries(store)
    clear_feature_cache()
    [path] = [p for p in entries if p.name.startswith(
        cache._keys(cache._transformer(), images[:1])[0])]
    other = [p for p in entries if p != path][0]
    CORRUPTIONS[kind](path, other, str(marker))
    CALLS.clear()
    with pytest.warns(UserWarning, match="unusable entry"):
        again = cache.transform(images)
    assert len(CALLS) == 1 and not marker.exists()
    for a, b in zip(first, again):
        xr.testing.assert_identical(a, b)


def test_feature_cache_checks_its_folder_before_computing(tmp_path):
    CALLS.clear()
    for what, folder in _unwritable(tmp_path).items():
        with pytest.raises(UnwritableFolderError, match="memory=") as err:
            FeatureCache(_extractor(), memory=folder).transform([PHOTO])
        assert folder in str(err.value), what
    assert CALLS == []


# -- evaluation records -----------------------------------------------------------
def test_a_result_record_that_is_a_folder(tmp_path):
    from dsolo_sk.evaluation import ResultStore

    store = ResultStore(tmp_path / "run", {"dataset": "toy"}, 2)
    os.makedirs(store.path("img"))
    with pytest.raises(UnreadableFileError, match="is a folder"):
        store.load("img")


def test_a_corrupt_run_description_is_rewritten(tmp_path):
    from dsolo_sk.evaluation import ResultStore

    ResultStore(tmp_path, {"dataset": "toy"}, 2)
    (tmp_path / "run.json").write_bytes(b"\x00\xff binary")
    with pytest.warns(UserWarning, match="run.json.*binary"):
        store = ResultStore(tmp_path, {"dataset": "toy"}, 2)
    assert json.loads((tmp_path / "run.json").read_text()) == store.run
