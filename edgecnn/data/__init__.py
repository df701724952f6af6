"""Datasets (Fashion-MNIST, image folders), splits, preprocessing and the tf.data input pipeline.

Importing this package does not import TensorFlow; only decoding/resizing images and
building ``tf.data`` pipelines do.
"""

from edgecnn.data.dataset import Dataset, dataset_fingerprint, load_dataset, make_tf_dataset, representative_images
from edgecnn.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from edgecnn.data.fashion_mnist import load_fashion_mnist, locate_fashion_mnist
from edgecnn.data.idx import read_idx
from edgecnn.data.image_folder import load_image_folder, read_image_folder
from edgecnn.data.preprocess import NormalizationSpec, make_augmenter, to_model_input
from edgecnn.data.raw import RawDataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "NormalizationSpec",
    "RawDataset",
    "dataset_fingerprint",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "locate_fashion_mnist",
    "make_augmenter",
    "make_tf_dataset",
    "read_idx",
    "read_image_folder",
    "representative_images",
    "to_model_input",
]
