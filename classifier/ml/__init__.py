"""The ML core: plain PyTorch, numpy and Pillow, importable without Django settings.

Input format and limits (`input`), canvas to MNIST (`preprocessing`), MNIST on disk (`data`),
augmentation (`augment`), the network (`model`), training (`training`), weights on disk
(`weights`), serving-side prediction (`inference`), training reports (`report`), torch devices
(`devices`) and drawn digits for tests and benchmarks (`canvas`). It imports nothing from the
web framework, the queue or Redis: an import contract in pyproject.toml holds it to that.
"""
