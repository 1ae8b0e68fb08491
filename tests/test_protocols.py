"""The evaluation protocols: every named setting against the peers' configs.

``PEERS`` below is the facts table of the peers' public configurations
(short side per dataset, inference with crop/stride, softmax scale,
prob_thd on VOC21 / Context60 / COCO-Object, SCLIP's area threshold),
transcribed independently of ``dsolo_sk.protocols``; every row is checked
against the package's data.
"""

import numpy as np
import pytest

from dsolo_sk.datasets import DATASETS
from dsolo_sk.protocols import (PROTOCOLS, SETTINGS, SOURCES, Protocol,
                                get_protocol)

ORDER = ("voc21", "voc20", "context60", "context59", "coco_object",
         "coco_stuff", "cityscapes", "ade20k")
NACLIP_SIZES = (336, 336, 336, 336, 336, 336, 560, 336)
SLIDE = ("slide", 224, 112)
WHOLE = ("whole",)


def _sizes(*values):
    return dict(zip(ORDER, values))


#: setting -> (short sides, inference per dataset (default under None),
#: logit scale per dataset (default under None), prob_thd on
#: (voc21, context60, coco_object), area_thd on voc21)
PEERS = {
    "paper": (_sizes(336, 336, 336, 336, 336, 336, 560, 336),
              {None: WHOLE}, {None: 40}, (0.1, 0.1, 0.1), None),
    "sclip": (_sizes(336, 336, 336, 336, 336, 448, 560, 336),
              {None: SLIDE}, {"voc21": 65, "context60": 50,
                              "coco_object": 50, None: 40},
              (0.1, 0.1, 0.1), 0.1),
    "naclip": (_sizes(*NACLIP_SIZES),
               {"voc21": WHOLE, "voc20": WHOLE, None: SLIDE}, {None: 40},
               (0.1, 0.1, 0.1), None),
    "cass": (_sizes(*NACLIP_SIZES), {"voc21": WHOLE, None: SLIDE},
             {None: 40}, (0.1, 0.1, 0.1), None),
    "sc-clip": (_sizes(*NACLIP_SIZES), {None: SLIDE},
                {"voc21": 50, "coco_object": 55, None: 40},
                (0.15, 0.15, 0.35), 0.1),
    "clearclip": (_sizes(*(448,) * 8),
                  {"cityscapes": ("slide", 224, 224),
                   None: ("slide", 448, 224)},
                  {None: 50}, (0.5, 0.15, 0.4), None),
    "proxyclip": (_sizes(336, 336, 336, 336, 336, 336, 448, 448),
                  {"cityscapes": ("slide", 224, 112),
                   None: ("slide", 336, 112)},
                  {None: 40}, (0.2, 0.15, 0.25), None),
    "corrclip": (_sizes(336, 336, 336, 336, 336, 336, 448, 448),
                 {"cityscapes": ("slide", 224, 112),
                  None: ("slide", 336, 112)},
                 {None: 40}, (0.2, 0.15, 0.25), None),
    "trident": (_sizes(448, 336, 576, 576, 448, 448, 688, 576),
                {"voc20": ("slide", 336, 112), None: ("slide", 336, 224)},
                {None: 40}, (0.2, 0.15, 0.25), None),
}
BACKGROUND = ("voc21", "context60", "coco_object")


def test_the_done_when_examples():
    assert get_protocol("voc21", "naclip").inference == "whole"
    assert get_protocol("voc21", "sclip").logit_scale == 65
    assert get_protocol("voc21", "proxyclip").slide_crop == 336


def test_every_setting_is_named_and_sourced():
    assert set(SETTINGS) == set(PEERS)
    assert set(SOURCES) == set(SETTINGS)
    assert set(PROTOCOLS) == {(d, s) for d in ORDER for s in SETTINGS}
    assert set(ORDER) == set(DATASETS)


@pytest.mark.parametrize("setting", sorted(PEERS))
def test_every_row_of_the_facts_table(setting):
    sizes, inference, scale, prob, area = PEERS[setting]
    for key in ORDER:
        p = get_protocol(key, setting)
        assert p.setting == setting and p.dataset == key
        assert p.short_side == sizes[key], key
        mode = inference.get(key, inference[None])
        assert p.inference == mode[0], key
        if mode[0] == "slide":
            assert (p.slide_crop, p.slide_stride) == mode[1:], key
        assert p.logit_scale == scale.get(key, scale[None]), key
        expected_thd = dict(zip(BACKGROUND, prob)).get(key)
        assert p.prob_threshold == expected_thd, key
        assert p.area_threshold == (area if key == "voc21" else None), key
        # shared by every setting
        assert p.long_side_max == 2048 and p.ignore_index == 255
        assert p.resampling == "opencv"
        assert p.pos_interpolation == "scale_factor"
        assert p.background_rule == "auto"
        assert p.has_background == DATASETS[key].has_background
        assert p.n_images == DATASETS[key].n_val_images
        assert p.reduce_zero_label == (key in ("voc20", "context59",
                                               "ade20k"))


def test_peers_is_an_alias_of_sclip():
    for key in ORDER:
        assert get_protocol(key, "peers") == get_protocol(key, "sclip")
    assert get_protocol("voc21", "peers").setting == "sclip"


def test_protocol_geometry():
    p = get_protocol("cityscapes")
    assert p.resized_shape((1024, 2048)) == (560, 1120)
    assert get_protocol("voc21").resized_shape((500, 375)) == (448, 336)
    # The long side is capped at 2048.
    assert get_protocol("voc21").resized_shape((100, 1000)) == (205, 2048)
    # mmcv's rounding, int(side * scale + 0.5): halves go up (round()
    # would give 4 for 3 * 1.5 = 4.5).
    assert get_protocol("voc21").resized_shape((333, 500)) == (336, 505)
    assert Protocol(dataset="t", n_classes=2, short_side=3).resized_shape(
        (2, 3)) == (3, 5)
    q = get_protocol("voc21", "sclip")
    for shape in [(336, 448), (336, 500), (100, 150), (224, 224)]:
        wins = q.windows(shape)
        cover = np.zeros(shape, int)
        for y0, y1, x0, x1 in wins:
            assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
            assert y1 - y0 == min(224, shape[0])
            cover[y0:y1, x0:x1] += 1
        assert cover.min() >= 1
    assert len(q.windows((336, 448))) == 2 * 3
    assert get_protocol("voc21").windows((7, 9)) == [(0, 7, 0, 9)]


def test_protocol_serialisation_and_validation():
    p = get_protocol("context60", "sclip")
    assert Protocol.from_dict(p.to_dict()) == p
    assert p.fingerprint() != get_protocol("context60").fingerprint()
    assert get_protocol("ade20k", short_side=448).setting == "custom"
    with pytest.raises(TypeError, match="unknown protocol fields"):
        get_protocol("ade20k", shortside=448)
    for name in ("prob_threshold", "area_threshold"):
        with pytest.raises(ValueError, match=f"{name}.*no background"):
            get_protocol("ade20k", **{name: 0.1})
        with pytest.raises(ValueError, match=name):
            get_protocol("voc21", **{name: float("nan")})
        with pytest.raises(ValueError, match=name):
            get_protocol("voc21", **{name: 1.5})
    for name in ("background_rule", "resampling", "pos_interpolation",
                 "inference"):
        with pytest.raises(ValueError, match=name):
            get_protocol("voc21", **{name: "other"})
    with pytest.raises(ValueError, match="logit_scale"):
        get_protocol("voc21", logit_scale=float("inf"))
    with pytest.raises(ValueError, match="setting"):
        get_protocol("voc21", "ours")
    with pytest.raises(ValueError, match="no protocol"):
        get_protocol("voc")
    with pytest.raises(ValueError, match="unknown protocol fields"):
        Protocol.from_dict({**p.to_dict(), "extra": 1})
