"""celebalib: predict the 40 CelebA face attributes, then retrieve and cluster faces by them."""

__version__ = "0.1.0"
