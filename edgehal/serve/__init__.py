"""Serve ONNX models over the Open Inference Protocol (KServe v2), as Triton speaks it.

``protocol`` (request/response models, JSON and binary tensor codecs,
validation), ``batcher`` (dynamic batching), ``repository`` (ONNX files,
folders, Triton model repositories), ``dataplane`` (models, readiness,
inference), ``metrics`` (Prometheus text) and ``app`` (the aiohttp routes and
the exception -> status table). aiohttp and onnxruntime are imported only when
a server is built, so ``import edgehal.serve`` stays light.
"""
