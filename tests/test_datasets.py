"""Benchmark readers and class-name files, on tiny fake datasets."""

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from dsolo_sk.datasets import (DATASETS, VOC21, load_class_names,
                               load_dataset, read_label_map, split_synonyms,
                               write_fake_dataset)
from dsolo_sk.protocols import get_protocol

EXPECTED = {  # key: (n_classes, reduce_zero_label, first display name)
    "voc21": (21, False, "background"),
    "voc20": (20, True, "aeroplane"),
    "context60": (60, False, "background"),
    "context59": (59, True, "aeroplane"),
    "coco_stuff": (171, False, "person"),
    "coco_object": (81, False, "background"),
    "cityscapes": (19, False, "road"),
    "ade20k": (150, True, "wall"),
}


# -- class-name files --------------------------------------------------------
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_class_files_have_the_protocol_counts(key):
    names = load_class_names(key)
    assert len(names) == EXPECTED[key][0] == get_protocol(key).n_classes
    assert len(set(names)) == len(names)
    assert all(n == n.strip() and n for n in names)


@pytest.mark.parametrize("key", ["voc21", "coco_object"])
def test_background_line_lists_stuff_names(key):
    bg = split_synonyms(load_class_names(key)[0])
    assert bg[:3] == ["sky", "wall", "tree"] and len(bg) == 26
    assert "background" not in bg


def test_person_and_tvmonitor_are_expanded():
    voc = load_class_names("voc21")
    assert split_synonyms(voc[15])[:2] == ["person", "person in shirt"]
    assert split_synonyms(voc[20])[:2] == ["television monitor", "tv monitor"]
    obj = load_class_names("coco_object")
    assert split_synonyms(obj[1])[-1] == "body"
    # VOC20 is VOC21 without the background line.
    assert load_class_names("voc20") == voc[1:]
    assert load_class_names("context59") == load_class_names("context60")[1:]


def test_custom_class_file(tmp_path):
    path = tmp_path / "cls.txt"
    path.write_text("cat,kitty\n\ndog ,  puppy\nsky\n")
    assert load_class_names(path) == ["cat, kitty", "dog, puppy", "sky"]
    path.write_text("cat\ncat\n")
    with pytest.raises(ValueError, match="twice"):
        load_class_names(path)
    path.write_text("cat\n")
    with pytest.raises(ValueError, match="at least two"):
        load_class_names(path)
    with pytest.raises(FileNotFoundError, match="voc21"):
        load_class_names(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="holds no name"):
        split_synonyms(" , ")


# -- readers -----------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_reader_reads_the_real_layout(key, tmp_path):
    n_classes, rzl, first = EXPECTED[key]
    root = write_fake_dataset(key, tmp_path, n_images=3, seed=1)
    ds = load_dataset(key, root)
    assert len(ds) == 3 and ds.n_classes == n_classes
    assert ds.reduce_zero_label is rzl
    assert ds.class_names[0] == first and len(ds.classes) == n_classes
    # Lazy: the reader holds file names, never pixels.
    assert not any(isinstance(v, np.ndarray) for v in vars(ds).values())
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2.ids == ds.ids
    shapes = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s.id == ds.ids[i]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3
        assert s.mask.dtype == np.uint8 and s.mask.shape == s.image.shape[:2]
        valid = s.mask[s.mask != 255]
        assert valid.size and valid.max() < n_classes
        assert (s.mask[0] == 255).all()
        shapes.add(s.mask.shape)
        raw = read_label_map(ds.mask_path(i)).astype(int)
        if rzl:  # 0 -> 255, k -> k - 1
            expect = np.where((raw == 0) | (raw == 255), 255, raw - 1)
        else:
            expect = raw
        np.testing.assert_array_equal(s.mask, expect)
    assert len(shapes) > 1  # variable sizes, as in the real sets
    assert ds[-1].id == ds.ids[-1]
    images, masks = ds.load([0, 2])
    assert len(images) == len(masks) == 2


def test_layout_paths_are_the_real_ones(tmp_path):
    root = write_fake_dataset("cityscapes", tmp_path)
    ds = load_dataset("cityscapes", root)
    rel = os.path.relpath(ds.image_path(0), tmp_path)
    assert rel.startswith(os.path.join("cityscapes", "leftImg8bit", "val"))
    assert ds.mask_path(0).endswith("_gtFine_labelTrainIds.png")
    ds = load_dataset("coco_object", write_fake_dataset("coco_object",
                                                        tmp_path / "c"))
    assert ds.mask_path(0).endswith("_instanceTrainIds.png")
    assert "annotations/val2017" in ds.mask_path(0).replace(os.sep, "/")
    ds = load_dataset("ade20k", write_fake_dataset("ade20k", tmp_path / "a"))
    assert "ADEChallengeData2016/images/validation" in \
        ds.image_path(0).replace(os.sep, "/")
    ds = load_dataset("context60", write_fake_dataset("context60",
                                                      tmp_path / "p"))
    assert "VOC2010/SegmentationClassContext" in \
        ds.mask_path(0).replace(os.sep, "/")


def test_voc_masks_are_palette_indices(tmp_path):
    ds = VOC21(write_fake_dataset("voc21", tmp_path))
    with Image.open(ds.mask_path(0)) as im:
        assert im.mode == "P"
        rgb = np.asarray(im.convert("RGB"))
    mask = ds.load_mask(0)
    assert (rgb[mask == 255] == (224, 224, 192)).all()  # VOC's ignore colour
    # The dataset folder itself works as root too.
    assert len(VOC21(os.path.join(tmp_path, "VOCdevkit", "VOC2012"))) == 2


def test_train_split_and_index_errors(tmp_path):
    root = write_fake_dataset("ade20k", tmp_path, split="train")
    ds = load_dataset("ade20k", root, split="train")
    assert len(ds) == 2
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds[0.5]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("voc", root)


# -- errors name the file ------------------------------------------------------
def test_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("voc21", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages") as err:
        load_dataset("voc21", tmp_path / "empty")
    assert "SegmentationClass" in str(err.value)  # the layout is shown
    root = write_fake_dataset("voc21", tmp_path / "v")
    with pytest.raises(FileNotFoundError, match="annotations"):
        load_dataset("ade20k", root)  # a VOC folder is no ADE20K


def test_missing_split_file_image_and_mask(tmp_path):
    root = write_fake_dataset("voc21", tmp_path, n_images=3)
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*\['val'\]"):
        load_dataset("voc21", root, split="test")
    base = tmp_path / "VOCdevkit" / "VOC2012"
    ids = (base / "ImageSets/Segmentation/val.txt").read_text().split()
    (base / "SegmentationClass" / f"{ids[1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[1]}.png"):
        load_dataset("voc21", root)
    (base / "JPEGImages" / f"{ids[2]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{ids[2]}.jpg"):
        load_dataset("voc21", root)


def test_missing_converted_masks_give_a_hint(tmp_path):
    root = write_fake_dataset("cityscapes", tmp_path)
    gt = tmp_path / "cityscapes" / "gtFine" / "val"
    for p in gt.rglob("*_gtFine_labelTrainIds.png"):
        p.rename(str(p).replace("labelTrainIds", "labelIds"))
    with pytest.raises(FileNotFoundError, match="createTrainIdLabelImgs"):
        load_dataset("cityscapes", root)


def test_unreadable_image_names_the_file(tmp_path):
    ds = load_dataset("ade20k", write_fake_dataset("ade20k", tmp_path))
    with open(ds.image_path(1), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=os.path.basename(ds.image_path(1))):
        ds[1]
    ds[0]  # the others still read


def test_truncated_mask_names_the_file(tmp_path):
    ds = load_dataset("coco_stuff", write_fake_dataset("coco_stuff", tmp_path))
    data = open(ds.mask_path(0), "rb").read()
    with open(ds.mask_path(0), "wb") as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(ValueError,
                       match="cannot read .*labelTrainIds.*as a mask.*truncated"):
        ds.load_mask(0)


def test_unexpected_mask_values_name_the_file(tmp_path):
    ds = load_dataset("cityscapes", write_fake_dataset("cityscapes", tmp_path))
    mask = read_label_map(ds.mask_path(0)).copy()
    mask[3, 3] = 33  # a raw labelId, not a trainId
    Image.fromarray(mask).save(ds.mask_path(0))
    with pytest.raises(ValueError, match=r"holds labels \[33\]") as err:
        ds[0]
    assert ds.mask_path(0) in str(err.value)


def test_colour_mask_and_size_mismatch(tmp_path):
    ds = load_dataset("ade20k", write_fake_dataset("ade20k", tmp_path))
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(ds.mask_path(0))
    with pytest.raises(ValueError, match="RGB image.*single-channel"):
        ds.load_mask(0)
    Image.fromarray(np.ones((5, 5), np.uint8)).save(ds.mask_path(0))
    with pytest.raises(ValueError, match="shape \\(5, 5\\) but its image"):
        ds[0]
