"""Datasets, synthetic pedestrians, Siamese training, evaluation and ONNX export for ASTPN."""
