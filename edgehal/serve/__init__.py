"""Serve ONNX models and TensorRT engines over the Open Inference Protocol (KServe v2), as Triton speaks it.

``protocol`` (request/response models, JSON and binary tensor codecs,
validation), ``batcher`` (dynamic batching), ``repository`` (model files,
folders, Triton model repositories, each opened through a runner),
``dataplane`` (models, readiness, inference), ``metrics`` (Prometheus text)
and ``app`` (the aiohttp routes and the exception -> status table). aiohttp
and the runners' backends are imported only when a server is built, so
``import edgehal.serve`` stays light.
"""
