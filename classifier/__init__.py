"""Handwritten-digit recognition.

The ML core (`preprocessing`, `data`, `model`, `training`, `inference`, ...) is plain PyTorch and
imports nothing from Django; `tasks`, `consumers` and `management` are thin adapters over it.
"""
