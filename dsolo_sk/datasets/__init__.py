"""Benchmark datasets in their standard layouts, and class-name files.

.. autosummary::

   load_dataset
   VOC21
   VOC20
   Context60
   Context59
   COCOStuff
   COCOObject
   Cityscapes
   ADE20K
   load_class_names
   split_synonyms
   write_fake_dataset
   make_scenes
   make_scene_family
   SCENE_FAMILIES
   AFFINITY_KINDS
   LOGIT_RANGES

How a dataset hands its classes to a segmenter: ``dataset.classes`` holds
one string per class, its synonyms joined by ``", "`` exactly as on the line
of the class file (``"person, person in shirt, ..."``). The CLIP extractor
splits such a name with :func:`split_synonyms` and scores the class by the
maximum over its synonyms, so several names can stand for one class index
(the background line of VOC21 and COCO-Object lists stuff names).

.. rubric:: Examples

:data:`DATASETS` and :data:`CLASS_FILES` share their keys:

>>> from dsolo_sk.datasets import CLASS_FILES, DATASETS
>>> sorted(DATASETS)
['ade20k', 'cityscapes', 'coco_object', 'coco_stuff', 'context59',
 'context60', 'voc20', 'voc21']
>>> DATASETS["voc21"].__name__, CLASS_FILES["voc21"]
('VOC21', 'voc21.txt')
"""

from ._benchmarks import (ADE20K, DATASETS, VOC20, VOC21, COCOObject,
                          COCOStuff, Context59, Context60, Cityscapes,
                          Sample, SegmentationDataset, load_dataset,
                          read_image, read_label_map)
from ._classnames import (CLASS_FILES, display_name, load_class_names,
                          split_synonyms)
from ._fake import write_fake_dataset

__all__ = ["ADE20K", "DATASETS", "VOC20", "VOC21", "COCOObject", "COCOStuff",
           "Context59", "Context60", "Cityscapes", "Sample",
           "SegmentationDataset", "load_dataset", "read_image",
           "read_label_map", "CLASS_FILES", "display_name",
           "load_class_names", "split_synonyms", "write_fake_dataset",
           "make_scenes", "make_scene_family", "SCENE_FAMILIES",
           "AFFINITY_KINDS", "LOGIT_RANGES"]

# the generators build torch affinities: imported on first use (PEP 562),
# so that reading dataset names (the command line) does not load torch
_LAZY = {"make_scenes": "._synthetic", "make_scene_family": "._families",
         "SCENE_FAMILIES": "._families", "AFFINITY_KINDS": "._families",
         "LOGIT_RANGES": "._families"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
