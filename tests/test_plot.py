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
    for bad in (0, 257):
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
