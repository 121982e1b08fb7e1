"""Datasets and the same-class accumulating scenario."""

from .same_class import same_class_accumulating, stratified_split, inject_label_noise
from .tensor_data import BatchCollate, TensorImageDataset, random_crop_flip

try:  # datasets.py is optional while it is being written
    from .datasets import (
        DatasetNotFoundError,
        cifar100,
        fashion_mnist,
        imagenet,
        tiny_imagenet,
    )
except ImportError:  # pragma: no cover
    pass
