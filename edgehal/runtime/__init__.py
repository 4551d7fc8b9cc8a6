"""Runners: one interface over PyTorch checkpoints, onnxruntime and TensorRT."""
