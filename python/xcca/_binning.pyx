# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Binning and dilation kernels (Cython). Use xcca.bin_max, xcca.bin_sum and xcca.dilate_max."""
