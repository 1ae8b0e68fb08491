"""Overlays of label maps: every class, class 0 included, is visible."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from dsolo_sk.cli import main
from dsolo_sk.plot import (label_palette, overlay_labels, plot_overlay,
                           save_overlay)


def _luminance(rgb):
    rgb = np.asarray(rgb, float)
    return rgb @ [0.2126, 0.7152, 0.0722]


@pytest.mark.parametrize("n", [1, 2, 21, 60, 150, 171, 256])
def test_palette_colours_are_distinct_and_visible(n):
    pal = label_palette(n)
    assert pal.shape == (n, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == n
    # none near black (class 0 included) nor near white: each colour has a
    # bright channel and a less bright one
    assert pal.max(1).min() >= 120 and pal.min(1).max() < 240
    assert _luminance(pal[0]) > 80
    # a prefix of a larger palette: class k keeps its colour
    np.testing.assert_array_equal(pal, label_palette(256)[:n])


def test_palette_refuses_bad_counts():
    for bad in (0, -1, 2 ** 24 + 1):
        with pytest.raises(ValueError, match="n_classes"):
            label_palette(bad)
    with pytest.raises(TypeError, match="n_classes"):
        label_palette(2.0)


def test_overlay_paints_class_zero_and_keeps_colours_per_class(photos):
    image = photos[0][:64, :96]
    pal = label_palette(5)
    labels = np.zeros(image.shape[:2], int)
    labels[:, 48:] = 3
    full = overlay_labels(image, labels, alpha=1)
    np.testing.assert_array_equal(full[0, 0], pal[0])  # class 0 in colour
    np.testing.assert_array_equal(full[0, -1], pal[3])
    # the colour of a class does not depend on which classes are present
    # (skimage's label2rgb alone colours labels by rank)
    only3 = overlay_labels(image, np.full(image.shape[:2], 3), alpha=1)
    np.testing.assert_array_equal(only3[0, 0], pal[3])
    # alpha < 1 blends over the image in grey
    half = overlay_labels(image, labels, alpha=0.5)
    assert not np.array_equal(half, full) and half.dtype == np.uint8


def test_overlay_errors_name_the_argument(photos):
    image = photos[0][:32, :32]
    with pytest.raises(ValueError, match="labels has shape"):
        overlay_labels(image, np.zeros((16, 16), int))
    with pytest.raises(ValueError, match="integer"):
        overlay_labels(image, np.zeros((32, 32)))
    with pytest.raises(ValueError, match="alpha"):
        overlay_labels(image, np.zeros((32, 32), int), alpha=float("nan"))
    with pytest.raises(ValueError, match="palette"):
        overlay_labels(image, np.full((32, 32), 4), palette=label_palette(3))
    with pytest.raises(ValueError, match="class_names"):
        plot_overlay(image, np.full((32, 32), 2), ["a", "b"],
                     ax=Figure().add_subplot())


def test_plot_overlay_legend_lists_the_present_classes(photos):
    labels = np.zeros((40, 60), int)
    labels[:, 30:] = 2
    ax = plot_overlay(photos[1][:40, :60], labels, ["cup", "saucer", "table"],
                      ax=Figure().add_subplot())
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cup", "table"]
    colours = [tuple(np.round(255 * np.asarray(h.get_facecolor()[:3])))
               for h in legend.legend_handles]
    assert colours == [tuple(label_palette(3)[0]), tuple(label_palette(3)[2])]


def test_save_overlay_keeps_the_image_resolution(tmp_path, photos):
    path = tmp_path / "o.png"
    labels = np.zeros((120, 200), int)
    save_overlay(path, photos[2][:120, :200], labels, ["cat"])
    with Image.open(path) as im:
        assert im.size[0] >= 200 and im.size[1] >= 120


def test_cli_overlay_and_label_png_draw_class_zero_in_colour(tmp_path,
                                                             tiny_clip_files,
                                                             capsys):
    """The command line's pictures use the palette: a uniform grey image,
    labelled all class 0, comes out coloured, not black."""
    img = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(img)
    templates = tmp_path / "t.txt"
    templates.write_text("{}\n")
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--classes", "sky,sea", "--out",
                 str(out), "--short-side", "32", "--mode", "raw",
                 "--model", tiny_clip_files["config"], "--pretrained",
                 tiny_clip_files["checkpoint"], "--templates",
                 str(templates), "--device", "cpu", "--no-progress"]) == 0
    with Image.open(out / "grey_labels.png") as im:
        palette = np.asarray(im.getpalette()[:6]).reshape(2, 3)
        labels = np.asarray(im)
    np.testing.assert_array_equal(palette, label_palette(2))
    k = int(labels[0, 0])
    with Image.open(out / "grey_overlay.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    # the pixels of the image part: grey blended with the class colour
    centre = rgb[rgb.shape[0] // 2, 5]
    expected = 0.55 * 128 + 0.45 * label_palette(2)[k].astype(float)
    np.testing.assert_allclose(centre, expected, atol=3)


# -- any number of classes, clear errors, a documented result (issue 25) -----
@pytest.mark.parametrize("n", [257, 500, 4096])
def test_palette_of_large_vocabularies_keeps_distinct_visible_colours(n):
    pal = label_palette(n)
    assert pal.shape == (n, 3) and len({tuple(c) for c in pal}) == n
    assert pal.max(1).min() >= 120
    np.testing.assert_array_equal(pal[:256], label_palette(256))


def test_palette_cycles_past_its_distinct_colours():
    pal = label_palette(5000)
    np.testing.assert_array_equal(pal[4096:], pal[:5000 - 4096])


def _many_class_labels(n_classes, shape=(60, 80)):
    # every class present: classes 0-19 on 200, 199, ... 181 pixels (class 0
    # on the rest too), the others on one pixel each, in a random layout
    counts = [200 - k for k in range(20)] + [1] * (n_classes - 20)
    flat = np.zeros(shape[0] * shape[1], int)
    flat[:sum(counts)] = np.repeat(np.arange(n_classes), counts)
    return np.random.default_rng(0).permutation(flat).reshape(shape)


def test_plot_overlay_draws_500_classes_with_a_capped_legend(photos):
    labels = _many_class_labels(500)
    names = [f"class {k}" for k in range(500)]
    ax = plot_overlay(photos[0][:60, :80], labels, names,
                      ax=Figure().add_subplot())
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    # the 20 largest classes by area, then a line saying how many are left
    assert len(texts) == 21
    assert texts[:20] == names[:20]
    assert texts[-1] == "+ 480 more classes"
    ax = plot_overlay(photos[0][:60, :80], labels, names, max_legend=None,
                      ax=Figure().add_subplot())
    assert len(ax.get_legend().get_texts()) == 500
    ax = plot_overlay(photos[0][:60, :80], labels, names, max_legend=3,
                      ax=Figure().add_subplot())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "class 0", "class 1", "class 2", "+ 497 more classes"]


def test_save_overlay_of_500_classes(tmp_path, photos):
    path = tmp_path / "many.png"
    save_overlay(path, photos[0][:60, :80], _many_class_labels(500),
                 [f"c{k}" for k in range(500)])
    with Image.open(path) as im:
        assert im.size[0] >= 80


@pytest.mark.parametrize("names,err,match", [
    ("abc", TypeError, "class_names must be a sequence of strings, got the "
                       "bare string 'abc'"),
    (b"abc", TypeError, "class_names must be a sequence of strings"),
    (["a", 2, "c"], TypeError, r"class_names\[1\] must be a string"),
    (["a", None, "c"], TypeError, r"class_names\[1\] must be a string"),
    (["a", "b"], ValueError, "class_names has 2 names but labels holds "
                             "class 2"),
    ({"a", "b", "c"}, TypeError, "class_names is a set"),
    (3, TypeError, "class_names must be a sequence of strings"),
])
def test_plot_overlay_refuses_bad_class_names(names, err, match, photos):
    labels = np.full((32, 32), 2)
    with pytest.raises(err, match=match):
        plot_overlay(photos[0][:32, :32], labels, names,
                     ax=Figure().add_subplot())


def test_plot_overlay_refuses_names_without_a_colour(photos):
    with pytest.raises(ValueError, match="palette has 2 colours but "
                       "class_names names 3 classes"):
        plot_overlay(photos[0][:32, :32], np.ones((32, 32), int),
                     ["a", "b", "c"], palette=label_palette(2),
                     ax=Figure().add_subplot())


@pytest.mark.parametrize("value,err,match", [
    (0, ValueError, "max_legend must be >= 1"),
    (2.5, TypeError, "max_legend must be an integer"),
    (True, TypeError, "max_legend must be an integer"),
])
def test_plot_overlay_refuses_bad_legend_caps(value, err, match, photos):
    with pytest.raises(err, match=match):
        plot_overlay(photos[0][:32, :32], np.ones((32, 32), int),
                     ["a", "b"], max_legend=value, ax=Figure().add_subplot())


def test_plot_overlay_docstring_says_how_to_save_and_show():
    doc = plot_overlay.__doc__
    returns = doc[doc.index("Returns"):]
    assert "matplotlib.axes.Axes" in returns
    assert "ax.figure.savefig(" in returns and "save_overlay" in returns
    assert "plt.show()" in returns


def test_save_overlay_onto_a_folder_is_a_clear_error(tmp_path, photos):
    from dsolo_sk.exceptions import UnwritableFileError

    folder = tmp_path / "pictures"
    folder.mkdir()
    with pytest.raises(UnwritableFileError, match="it is a folder"):
        save_overlay(folder, photos[0][:32, :32], np.zeros((32, 32), int))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pictures"]
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("name,match", [
    ("overlay", "has no extension"),
    ("overlay.xyz", "extension '.xyz'"),
])
def test_save_overlay_needs_a_picture_extension(name, match, tmp_path,
                                                photos):
    from dsolo_sk.exceptions import UnwritableFileError

    with pytest.raises(UnwritableFileError, match=match):
        save_overlay(tmp_path / name, photos[0][:32, :32],
                     np.zeros((32, 32), int))
    assert list(tmp_path.iterdir()) == []


def test_save_overlay_below_a_file_and_in_a_new_folder(tmp_path, photos):
    from dsolo_sk.exceptions import UnwritableFileError

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UnwritableFileError, match="its folder .* it is a "
                       "file, not a folder"):
        save_overlay(a_file / "o.png", photos[0][:32, :32],
                     np.zeros((32, 32), int))
    assert a_file.read_text() == "mine"
    # a folder that does not exist yet is created, as the CLI's are
    path = tmp_path / "new" / "o.png"
    save_overlay(path, photos[0][:32, :32], np.zeros((32, 32), int))
    assert path.is_file()


def test_label_png_of_more_than_256_classes(tmp_path):
    from dsolo_sk.cli import save_label_png

    labels = _many_class_labels(300)
    path = tmp_path / "labels.png"
    save_label_png(path, labels, 300)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im), labels)
