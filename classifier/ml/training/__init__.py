"""Training: the data, augmentation, recipes and evaluation sets that make the weights.

Nothing here is imported by the worker (an import-linter contract says so): serving needs only the
runtime modules beside this package (model, weights, inference, preprocessing, rasterizer, ...).
"""
