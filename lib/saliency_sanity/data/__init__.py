"""Images: Fashion-MNIST from IDX files, synthetic data, and folders of the user's images.
"""
from .folder import FolderImages, load_image_folder
from .images import (FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, ImageSet, find_fashion_mnist, load_fashion_mnist,
                     synthetic)

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FolderImages", "ImageSet", "find_fashion_mnist",
           "load_fashion_mnist", "load_image_folder", "synthetic"]
