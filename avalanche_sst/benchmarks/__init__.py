"""Datasets, the same-class accumulating scenario and the class-split scenarios."""

from .same_class import same_class_accumulating, stratified_split, inject_label_noise
from .tensor_data import BatchCollate, TensorImageDataset, random_crop_flip
from .scenarios import SETTINGS, class_incremental, new_class, permuted, task_incremental, unseen_class

from .batched_fetch import enable_batched_fetch
from .datasets import DatasetNotFoundError, cifar10, cifar100, fashion_mnist, imagenet, tiny_imagenet

# Every strategy's loaders fetch a mini-batch of our datasets with one gather.
enable_batched_fetch()
