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
   SYNTHETIC_FAMILIES
   CLIP_FAMILIES
   CLIP_TARGETS
   CLIP_RANGES
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

import lazy_loader

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
           "SYNTHETIC_FAMILIES", "CLIP_FAMILIES", "CLIP_TARGETS",
           "CLIP_RANGES", "AFFINITY_KINDS", "LOGIT_RANGES"]

# name -> submodule, imported on first access (PEP 562, through
# lazy_loader, as scikit-image does)
__getattr__, _lazy_dir, _ = lazy_loader.attach(
    __name__, submod_attrs={
        "_synthetic": ["make_scenes"],
        "_families": ["SCENE_FAMILIES",
                      "SYNTHETIC_FAMILIES", "CLIP_FAMILIES", "AFFINITY_KINDS",
                      "LOGIT_RANGES"],
        # make_scene_family comes through _clip_like, which registers the
        # CLIP-like generator with _families on import
        "_clip_like": ["make_scene_family", "CLIP_TARGETS", "CLIP_RANGES"]})


def __dir__():
    return sorted(set(globals()) | set(_lazy_dir()))
