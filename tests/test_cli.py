"""The dsolo-sk command line, end to end with a tiny random CLIP."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points

import numpy as np
import pytest
from PIL import Image

from dsolo_sk.cli import main
from dsolo_sk.datasets import write_fake_dataset

MODE = os.environ.get("DSOLO_SK_TEST_MODE", "velocity")


def test_console_script_is_declared():
    eps = entry_points(group="console_scripts")
    (ep,) = [e for e in eps if e.name == "dsolo-sk"]
    assert ep.value == "dsolo_sk.cli:main"


def test_protocols_command(capsys):
    assert main(["protocols"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["dataset", "setting", "short", "classes", "inference",
                       "scale", "prob_thd", "area_thd", "reduce0"]
    assert ["cityscapes", "paper", "560", "19", "whole", "40", "-", "-",
            "False"] in rows
    assert ["voc21", "sclip", "336", "21", "slide", "224/112", "65", "0.1",
            "0.1", "False"] in rows
    assert ["voc21", "naclip", "336", "21", "whole", "40", "0.1", "-",
            "False"] in rows
    assert ["coco_object", "sc-clip", "336", "81", "slide", "224/112", "55",
            "0.35", "-", "False"] in rows
    assert len(rows) == 1 + 8 * 9
    # one setting ("peers" is SCLIP's), one dataset, and the sources
    assert main(["protocols", "--setting", "peers", "--dataset", "voc21",
                 "--sources"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["voc21", "sclip"] and out[2] == ""
    assert out[3] == "sclip: SCLIP" and "wangf3014/SCLIP" in out[4]


@pytest.fixture
def model_args(tiny_clip_files, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\n{}\n")
    return ["--model", tiny_clip_files["config"], "--pretrained",
            tiny_clip_files["checkpoint"], "--templates", str(templates),
            "--affinity", "color", "--device", "cpu", "--mode", MODE]


def test_evaluate_command_writes_results(model_args, tmp_path, capsys):
    root = write_fake_dataset("ade20k", tmp_path / "data", n_images=3)
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "ade20k", "--root", root, "--out",
            str(out), "--short-side", "48", "--limit", "2", "--no-progress",
            *model_args]
    assert main(argv) == 0
    assert "ade20k (paper, 2 images): mIoU" in capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert data["n_images"] == 2 and data["protocol"]["short_side"] == 48
    assert data["protocol"]["reduce_zero_label"] is True
    assert data["geometry"] == "estimator"
    clip = data["segmenter"]["params"]["extractor"]["params"]
    assert clip["short_side"] == 48 and clip["window"] is None
    assert data["segmenter"]["params"]["mode"] == MODE
    assert (out / "per_class_iou.csv").exists()
    # Same command again: everything is resumed, nothing recomputed.
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["n_computed"] == 0


def test_evaluate_command_errors_name_the_path(model_args, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["evaluate", "--dataset", "voc21", "--root", str(missing),
                 "--out", str(tmp_path / "o"), *model_args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsolo-sk: error:") and str(missing) in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--dataset", "voc22", "--root", str(tmp_path),
              "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_segment_command(model_args, tmp_path, capsys):
    import xarray as xr

    rng = np.random.default_rng(0)
    paths = []
    for k, shape in enumerate([(40, 56), (36, 36)]):
        p = tmp_path / ("in" if k == 0 else "in2") / "photo.png"
        p.parent.mkdir()
        Image.fromarray(rng.integers(0, 255, shape + (3,), np.uint8)).save(p)
        paths.append(str(p))
    out = tmp_path / "seg"
    assert main(["segment", *paths, "--classes", "cat, dog,sky", "--out",
                 str(out), "--short-side", "32", "--netcdf",
                 *model_args]) == 0
    # Two inputs with the same name do not overwrite each other.
    for stem, shape in (("photo", (40, 56)), ("photo_1", (36, 36))):
        with Image.open(out / f"{stem}_labels.png") as im:
            assert im.mode == "P" and im.size == shape[::-1]
            labels = np.asarray(im)
        assert labels.max() < 3
        with Image.open(out / f"{stem}_overlay.png") as im:
            assert im.mode in ("RGB", "RGBA")
        with xr.open_dataarray(out / f"{stem}_scores.nc") as da:
            assert da.dims == ("class", "y", "x")
            assert list(da["class"].values) == ["cat", "dog", "sky"]
            np.testing.assert_array_equal(da.values.argmax(0), labels)
    assert capsys.readouterr().out.count("photo.png:") == 2


def test_segment_command_names_an_unreadable_image(model_args, tmp_path,
                                                   capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert main(["segment", str(bad), "--classes", "a,b", "--out",
                 str(tmp_path / "o"), *model_args]) == 1
    assert "broken.jpg" in capsys.readouterr().err


def test_sigterm_stops_the_cli_and_the_rerun_resumes(model_args, tmp_path):
    root = write_fake_dataset("cityscapes", tmp_path / "data", n_images=6,
                              size=(40, 80))
    out = tmp_path / "out"

    def cli_args(folder):
        return ["evaluate", "--dataset", "cityscapes", "--root", root,
                "--out", str(folder), "--short-side", "40", "--no-progress",
                *model_args]

    argv = [sys.executable, "-m", "dsolo_sk.cli", *cli_args(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    per_image = out / "per_image"
    deadline = time.monotonic() + 120

    def n_results():
        if not per_image.exists():
            return 0
        return sum(n.endswith(".json") and not n.startswith(".")
                   for n in os.listdir(per_image))

    while proc.poll() is None and n_results() < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # finished before the signal: nothing to test
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 143, err.decode()
    n_done = n_results()
    assert 2 <= n_done < 6
    assert not (out / "results.json").exists()
    done = subprocess.run(argv, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    data = json.loads((out / "results.json").read_text())
    assert data["n_images"] == 6 and data["n_computed"] == 6 - n_done
    # The resumed matrix is the one of an uninterrupted run.
    ref = tmp_path / "ref"
    assert main(cli_args(ref)) == 0
    differ = [n for n in sorted(os.listdir(ref / "per_image"))
              if _counts(ref / "per_image" / n) != _counts(per_image / n)]
    assert not differ, f"per-image results differ: {differ}"
    assert json.loads((ref / "results.json").read_text())[
        "confusion_matrix"] == data["confusion_matrix"]


def _counts(path):
    body = json.loads(path.read_text())
    return body["cm_index"], body["cm_count"]


def _segment_argv(*extra):
    return ["segment", "photo.png", "--classes", "a,b", "--out", "o",
            "--affinity", "color", "--pretrained", "none", *extra]


@pytest.mark.parametrize("extra, cls, name, value", [
    (["--tau", "0.5"], "TransportVelocity", "tau", 0.5),
    (["--mode", "path", "--epsilon", "0.05"], "TransportPath", "epsilon",
     0.05),
])
def test_tau_and_epsilon_build_the_discrepancy(extra, cls, name, value):
    from dsolo_sk.cli import build_parser, build_segmenter

    seg = build_segmenter(build_parser().parse_args(_segment_argv(*extra)))
    assert type(seg.discrepancy).__name__ == cls
    assert seg.get_params()[f"discrepancy__{name}"] == value
    # the discrepancy holds the knob; nothing else differs from the default
    params = seg.discrepancy.get_params()
    params.pop(name)
    assert params == {k: v for k, v in type(seg.discrepancy)()
                      .get_params().items() if k != name}
    plain = build_segmenter(build_parser().parse_args(_segment_argv()))
    assert plain.discrepancy is None


@pytest.mark.parametrize("extra, words", [
    (["--mode", "path", "--tau", "0.5"], ["--tau", "--mode velocity"]),
    (["--epsilon", "0.1"], ["--epsilon", "--mode path"]),
    (["--mode", "kl", "--tau", "0.3"], ["--tau", "--mode velocity"]),
    (["--tau", "nan"], ["--tau", "nan"]),
    (["--mode", "path", "--epsilon", "-1"], ["--epsilon", "> 0"]),
])
def test_tau_and_epsilon_errors_name_the_option(extra, words, tmp_path,
                                                capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = _segment_argv(*extra)
    argv[1], argv[5] = str(image), str(tmp_path / "o")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsolo-sk: error:")
    for word in words:
        assert word in err


def test_evaluate_records_tau_and_refuses_to_mix_runs(model_args, tmp_path,
                                                      capsys):
    root = write_fake_dataset("ade20k", tmp_path / "data", n_images=1)
    out = tmp_path / "out"
    argv = ["evaluate", "--dataset", "ade20k", "--root", root, "--out",
            str(out), "--short-side", "32", "--no-progress", *model_args,
            "--mode", "velocity"]
    assert main([*argv, "--tau", "0.5"]) == 0
    data = json.loads((out / "results.json").read_text())
    disc = data["segmenter"]["params"]["discrepancy"]
    assert disc["class"] == "dsolo_sk.discrepancy.TransportVelocity"
    assert disc["params"]["tau"] == 0.5
    capsys.readouterr()
    # another tau is another run: its results never mix with these
    assert main([*argv, "--tau", "0.2"]) == 1
    assert str(out) in capsys.readouterr().err


# -- first run: an instant command line, a demo without weights -------------

HEAVY = ("torch", "ot", "diffusers", "open_clip", "transformers")


def _imported(stderr):
    """Top-level names of the modules listed by ``python -X importtime``."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_help_and_version_import_nothing_heavy():
    """``dsolo-sk --help`` (the installed entry point's module) and
    ``--version`` answer without importing torch, POT, diffusers or
    open_clip."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for flag in ("--help", "--version"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "dsolo_sk.cli", flag],
            cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        imported = _imported(proc.stderr)
        assert "dsolo_sk" in imported and "argparse" in imported
        assert not imported & set(HEAVY), imported & set(HEAVY)
    assert proc.stdout.strip() == f"dsolo-sk {__import__('dsolo_sk').__version__}"


LAZY_CHILD = r"""
import sys
import dsolo_sk
assert not {"torch", "ot", "sklearn", "xarray"} & set(sys.modules), sorted(
    m for m in ("torch", "ot", "sklearn", "xarray") if m in sys.modules)
names = set(dir(dsolo_sk))
assert {"DirectSegmenter", "TransportPath", "TransportVelocity",
        "KLDiscrepancy", "__version__"} <= names, names
from dsolo_sk import DirectSegmenter, TransportVelocity
from dsolo_sk.segmenters import DirectSegmenter as same
assert DirectSegmenter is same and "torch" in sys.modules
try:
    dsolo_sk.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""


def test_import_is_light_and_names_load_on_first_use():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", LAZY_CHILD], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_demo_runs_offline_without_weights(tmp_path):
    """``dsolo-sk demo --out DIR`` with ``HF_HUB_OFFLINE=1`` and an empty
    Hugging Face cache: no weights, and it writes the overlays and prints
    the ablation."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "empty_hf_home")}
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "dsolo_sk.cli", "demo", "--out", str(out),
         "--scenes", "2"], cwd=root, env=env, capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["coffee_kl.png", "coffee_path.png", "coffee_raw.png",
                    "coffee_velocity.png"]
    for name in pngs:
        with Image.open(out / name) as im:
            assert im.size[0] > 600 and im.size[1] >= 400  # photo + legend
    lines = proc.stdout.splitlines()
    miou = {}
    for line in lines[lines.index(next(x for x in lines
                                       if x.startswith("2. ablation"))) + 1:]:
        if line.strip().startswith("mode="):
            mode, value = line.split()
            miou[mode.split("=")[1].strip("'")] = float(value)
    assert set(miou) == {"raw", "kl", "path", "velocity"}
    assert all(0 <= v <= 100 for v in miou.values())
    assert not (tmp_path / "empty_hf_home").exists()  # nothing downloaded


def test_protocols_table_is_aligned(capsys):
    assert main(["protocols"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # every column as wide as its widest cell: all lines equally long, and
    # the character before each header column is a gap in every row
    assert len({len(line) for line in lines}) == 1
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])][1:]
    assert len(starts) == 8
    for line in lines[1:]:
        assert all(line[k - 1] == " " for k in starts), line


def test_unknown_device_names_the_option_before_anything_runs(model_args,
                                                              tmp_path,
                                                              capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    args = [a if a != "cpu" else "gpu" for a in model_args]
    out = tmp_path / "seg"
    assert main(["segment", str(image), "--classes", "a,b", "--out",
                 str(out), "--no-progress", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsolo-sk: error: --device must be") and \
        "'gpu'" in err
    assert not out.exists()


def test_a_failed_evaluation_leaves_no_empty_output_folder(model_args,
                                                           tmp_path):
    root = write_fake_dataset("ade20k", tmp_path / "data", n_images=2)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    args = list(model_args)
    args[args.index("--pretrained") + 1] = str(broken)
    out = tmp_path / "out"
    assert main(["evaluate", "--dataset", "ade20k", "--root", root, "--out",
                 str(out), "--short-side", "48", "--no-progress", *args]) == 1
    assert not out.exists()
    # a folder that was there before the command is left alone
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["evaluate", "--dataset", "ade20k", "--root", root, "--out",
                 str(out), "--short-side", "48", "--no-progress", *args]) == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_thread_policy(monkeypatch):
    """Without OMP_NUM_THREADS, the commands give torch the idle CPUs (at
    least one, at most torch's default); with it, they leave torch alone."""
    import torch

    from dsolo_sk._threads import configure_torch_threads, idle_cpus

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_torch_threads() is None
        assert torch.get_num_threads() == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        n = configure_torch_threads()
        assert n == torch.get_num_threads() == min(idle_cpus(), before)
        assert n >= 1
    finally:
        torch.set_num_threads(before)


# -- --batch-size ------------------------------------------------------------


def test_batch_size_reaches_the_segmenter():
    from dsolo_sk.cli import build_parser, build_segmenter

    parser = build_parser()
    seg = build_segmenter(parser.parse_args(_segment_argv("--batch-size",
                                                          "3")))
    assert seg.batch_size == 3
    assert seg._feature_extractor(["a", "b"]).batch_size == 3
    assert build_segmenter(parser.parse_args(_segment_argv())).batch_size == 1


def test_segment_batches_images_of_one_size(model_args, tmp_path, capsys,
                                            monkeypatch):
    """--batch-size 2: the two 40 x 56 photos go through CLIP in one
    forward (a hook on the real image tower), the outputs are those of
    --batch-size 1."""
    import warnings
    from collections import OrderedDict

    from dsolo_sk.features import CLIPFeatures, clip as clip_module

    rng = np.random.default_rng(1)
    paths = []
    for k, shape in enumerate([(40, 56), (40, 56), (36, 36)]):
        p = tmp_path / f"photo{k}.png"
        Image.fromarray(rng.integers(0, 255, shape + (3,), np.uint8)).save(p)
        paths.append(str(p))
    config = model_args[model_args.index("--model") + 1]
    weights = model_args[model_args.index("--pretrained") + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visual = CLIPFeatures(config, weights, device="cpu",
                              dtype="auto")._load().model.visual
    seen = []
    hook = visual.transformer.register_forward_hook(
        lambda m, a, o: seen.append(a[0].shape[0]))
    labels = {}
    try:
        for batch in ("1", "2"):
            out = tmp_path / f"seg{batch}"
            seen.clear()
            # CLIPFeatures keeps its last results: start each run without
            monkeypatch.setattr(clip_module, "_RECENT", OrderedDict())
            assert main(["segment", *paths, "--classes", "cat,dog,sky",
                         "--out", str(out), "--short-side", "32",
                         "--no-progress", "--batch-size", batch,
                         *model_args]) == 0
            labels[batch] = [np.asarray(Image.open(
                out / f"photo{k}_labels.png")) for k in range(3)]
            sizes = {"1": [1, 1, 1], "2": [2, 1]}[batch]
            # the text tower runs too, through encode_text, not the hook's
            assert seen == sizes
    finally:
        hook.remove()
    for a, b in zip(labels["1"], labels["2"]):
        np.testing.assert_array_equal(a, b)
    assert capsys.readouterr().out.count("photo") >= 6


@pytest.mark.parametrize("value, message", [
    ("0", "--batch-size must be >= 1 images, got 0"),
    ("5000", "--batch-size must be <= 4096 images, got 5000"),
])
def test_bad_batch_size_is_a_clear_error(value, message, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    out = tmp_path / "o"
    argv = _segment_argv("--batch-size", value)
    argv[1], argv[5] = str(image), str(out)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dsolo-sk: error: {message}")
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:  # not an integer: argparse's
        main(_segment_argv("--batch-size", "two"))
    assert exc.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


# -- counts and output paths: checked before anything runs (issue 25) --------
@pytest.mark.parametrize("value, message", [
    ("1000000000", "--scenes must be <= 1000 scenes, got 1000000000"),
    ("0", "--scenes must be >= 1 scenes, got 0"),
])
def test_demo_scene_count_is_a_clear_error(value, message, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", value]) == 1
    assert capsys.readouterr().err.startswith(f"dsolo-sk: error: {message}")
    assert not out.exists()


def _unusable_out(where, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    if where == "read_only":
        if not sys.platform.startswith("linux"):
            pytest.skip("/proc is Linux's")
        # no file can be created in /proc, even by root (chmod cannot
        # stop root, and tests may run as root)
        return a_file, "/proc/dsolo-sk-test-out", "cannot write in '/proc'"
    if where == "file":
        return a_file, str(a_file), "it is a file, not a folder"
    return a_file, str(a_file / "demo"), "is a file, so no folder can be"


@pytest.mark.parametrize("where", ["file", "below_a_file", "read_only"])
def test_demo_out_is_checked_before_anything_runs(where, tmp_path, capsys):
    a_file, out, reason = _unusable_out(where, tmp_path)
    assert main(["demo", "--out", out, "--scenes", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dsolo-sk: error: --out={out!r} cannot be used "
                          "as an output folder"), err
    assert reason in err
    assert a_file.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


@pytest.mark.parametrize("where", ["file", "below_a_file", "read_only"])
def test_weights_download_cache_is_checked_first(where, tmp_path, capsys):
    a_file, out, reason = _unusable_out(where, tmp_path)
    assert main(["weights", "download", "--cache", out,
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dsolo-sk: error: --cache={out!r} cannot be "
                          "used as an output folder"), err
    assert reason in err and a_file.read_text() == "mine"


def test_dask_workers_are_checked_before_anything_runs(model_args, tmp_path,
                                                       capsys):
    root = write_fake_dataset("ade20k", tmp_path / "data", n_images=1)
    out = tmp_path / "out"
    assert main(["evaluate", "--dataset", "ade20k", "--root", root, "--out",
                 str(out), "--dask", "--workers", "100000", "--no-progress",
                 *model_args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsolo-sk: error: --workers must be <= 256")
    assert not out.exists()
