"""Export: ONNX (keep | prune), reduced precision, TensorRT plans, Triton repositories."""
