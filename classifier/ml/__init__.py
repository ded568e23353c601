"""The ML core: plain PyTorch, numpy and Pillow, importable without Django settings.

The modules here are what the worker runs: input format and limits (`input`), images to MNIST
(`preprocessing`), ink (`ink`, `rasterizer`), numbers cut into digits (`segmentation`,
`ink_segmentation`), the brush that draws ink (`brush`), the network (`model`), "not a digit"
(`rejection`), weights on disk and the model store (`weights`, `modelstore`, `modellock`),
prediction (`inference`) and torch devices (`devices`). What makes weights (data, training,
calibration, drawn digits and non-digits, reports) is `training`, which the worker never imports.
It imports nothing from the web framework, the queue or Redis: import contracts in pyproject.toml
hold it to that, and the worker's modules to importing no training code and no torchvision.
"""
