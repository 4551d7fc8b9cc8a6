"""The fake TensorRT is at least as strict as TensorRT 10 where edgehal could go wrong.

If these pass, a call that TensorRT 10 would refuse (a removed attribute, a
wrong type, an impossible profile, an unbound or out-of-profile tensor) fails
the build and runner tests too, instead of passing against a lenient fake.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_cuda  # noqa: E402
import fake_tensorrt as trt  # noqa: E402
import trt_test_models as tm  # noqa: E402


class Recorder(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity, msg):
        if severity == trt.Logger.ERROR:
            self.errors.append(msg)


@pytest.fixture(autouse=True)
def fresh():
    trt.reset()
    yield
    trt.reset()


@pytest.fixture
def network(tmp_path):
    """The tiny HAL CNN parsed: input (-1, 1, 28, 28), outputs digit and parity."""
    builder = trt.Builder(Recorder())
    network = builder.create_network(0)
    assert trt.OnnxParser(network, builder.logger).parse_from_file(str(tm.export_cnn(tmp_path / "m.onnx")))
    return builder, network


def _engine(builder, network, lo=1, hi=8):
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (lo, 1, 28, 28), (hi, 1, 28, 28), (hi, 1, 28, 28))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, builder.logger.errors
    return trt.Runtime(builder.logger).deserialize_cuda_engine(plan)


def test_removed_and_unknown_attributes_raise_on_every_object(network):
    builder, net = network
    engine = _engine(builder, net)
    context = engine.create_execution_context()
    objects = {"builder": builder, "network": net, "tensor": net.get_input(0),
               "parser": trt.OnnxParser(net, builder.logger), "profile": builder.create_optimization_profile(),
               "config": builder.create_builder_config(), "engine": engine, "context": context,
               "runtime": trt.Runtime(builder.logger)}
    for what, obj in objects.items():
        with pytest.raises(AttributeError):
            obj.no_such_attribute = 1
        with pytest.raises(AttributeError):
            obj.no_such_attribute  # noqa: B018
    with pytest.raises(AttributeError, match="max_batch_size"):
        builder.max_batch_size = 8  # implicit batch is gone in TensorRT 10
    with pytest.raises(AttributeError, match="max_workspace_size"):
        objects["config"].max_workspace_size = 1 << 30  # replaced by set_memory_pool_limit
    for removed in ("build_engine", "build_cuda_engine"):
        assert not hasattr(builder, removed)
    for removed in ("num_bindings", "get_binding_shape", "binding_is_input", "max_batch_size"):
        assert not hasattr(engine, removed)
    for removed in ("execute_async_v2", "execute_async", "set_binding_shape"):
        assert not hasattr(context, removed)
    assert not hasattr(trt.BuilderFlag, "STRICT_TYPES")


def test_read_only_properties_and_types_are_enforced(network):
    builder, net = network
    config = builder.create_builder_config()
    with pytest.raises(AttributeError):
        builder.num_DLA_cores = 2
    with pytest.raises(AttributeError):
        config.num_optimization_profiles = 1
    with pytest.raises(TypeError):
        config.set_flag("FP16")
    with pytest.raises(TypeError):
        config.set_memory_pool_limit("WORKSPACE", 1 << 20)
    with pytest.raises(TypeError):
        config.default_device_type = "DLA"
    with pytest.raises(TypeError):
        config.DLA_core = True
    with pytest.raises(TypeError):
        trt.Runtime(builder.logger).engine_host_code_allowed = 1
    with pytest.raises(TypeError):
        trt.OnnxParser(net, builder.logger).set_flag("NATIVE_INSTANCENORM")


def test_profile_shapes_must_be_consistent():
    profile = trt.Builder(Recorder()).create_optimization_profile()
    with pytest.raises(RuntimeError, match="opt is inconsistent"):
        profile.set_shape("input", (1, 1, 28, 28), (8, 1, 28), (8, 1, 28, 28))
    with pytest.raises(RuntimeError, match="opt is inconsistent"):
        profile.set_shape("input", (8, 1, 28, 28), (4, 1, 28, 28), (8, 1, 28, 28))
    with pytest.raises(RuntimeError, match="max is inconsistent"):
        profile.set_shape("input", (1, 1, 28, 28), (8, 1, 28, 28), (4, 1, 28, 28))
    profile.set_shape("input", (1, 1, 28, 28), (4, 1, 28, 28), (8, 1, 28, 28))


def test_the_build_refuses_a_dynamic_network_without_a_fitting_profile(network):
    builder, net = network
    assert builder.build_serialized_network(net, builder.create_builder_config()) is None
    assert "no optimization profile has been defined" in builder.logger.errors[-1]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 28), (8, 1, 28), (8, 1, 28))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(net, config) is None
    assert "does not match the network input" in builder.logger.errors[-1]


def test_the_context_binds_only_what_the_engine_accepts(network):
    builder, net = network
    context = _engine(builder, net, lo=2, hi=8).create_execution_context()
    assert not context.set_input_shape("input", (9, 1, 28, 28))  # outside the profile
    assert not context.set_input_shape("input", (4, 1, 28))  # wrong rank
    assert not context.set_input_shape("digit", (4, 10))  # an output
    assert not context.set_tensor_address("logits", 1)  # no such tensor
    assert not context.execute_async_v3(0)  # no input shape yet
    assert context.set_input_shape("input", (4, 1, 28, 28))
    assert context.get_tensor_shape("digit") == (4, 10)
    assert not context.execute_async_v3(0)  # no addresses yet
    memory = fake_cuda.HostMemory(0)
    x = memory.upload(np.ones((4, 1, 28, 28), np.float32))
    outs = {name: memory.empty((4, n), "float32") for name, n in (("digit", 10), ("parity", 2))}
    for name, tensor in {"input": x, **outs}.items():
        assert context.set_tensor_address(name, tensor.data_ptr())
    assert context.execute_async_v3(memory.stream_handle)
    assert outs["digit"][0, 0].item() == 784 + sum(b"digit")
    # host memory that is not the fake device's is refused, as TensorRT needs device memory
    stray = np.zeros((4, 10), np.float32)
    assert context.set_tensor_address("digit", stray.ctypes.data)
    assert not context.execute_async_v3(memory.stream_handle)
    assert "is not 160 bytes of device memory" in builder.logger.errors[-1]
