"""The fake TensorRT is at least as strict as TensorRT 10 and 11 where edgehal could go wrong.

If these pass, a call that the pretended major would refuse (a removed
attribute or flag, a wrong type, an impossible profile, an unbound or
out-of-profile tensor, an engine of the other major) fails the build and
runner tests too, instead of passing against a lenient fake. Every test runs
as both majors.
"""

from __future__ import annotations

import json
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
        self.warnings: list[str] = []

    def log(self, severity, msg):
        if severity == trt.Logger.ERROR:
            self.errors.append(msg)
        elif severity == trt.Logger.WARNING:
            self.warnings.append(msg)


@pytest.fixture(params=trt.MAJORS, ids=lambda m: f"trt{m}", autouse=True)
def major(request, monkeypatch):
    """The fake installed as TensorRT 10, then 11."""
    trt.install(monkeypatch, request.param)
    yield request.param
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
        builder.max_batch_size = 8  # implicit batch is gone since TensorRT 10
    with pytest.raises(AttributeError, match="max_batch_size"):
        builder.max_batch_size  # noqa: B018
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


def test_names_follow_the_real_bindings_of_each_major(network, major):
    import tensorrt

    builder, net = network
    config = builder.create_builder_config()
    if major == 10:
        assert {"FP16", "INT8"} <= set(tensorrt.BuilderFlag.__members__)
        assert builder.platform_has_fast_fp16 and config.int8_calibrator is None
        net.get_input(0).dtype = tensorrt.DataType.FLOAT
        assert int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    else:  # weak typing and implicit quantization are gone in 11; strong typing is always on
        for flag in ("FP16", "INT8", "BF16", "FP8", "INT4"):
            with pytest.raises(AttributeError):
                getattr(tensorrt.BuilderFlag, flag)
        with pytest.raises(AttributeError, match="platform_has_fast_fp16"):
            builder.platform_has_fast_fp16  # noqa: B018
        with pytest.raises(AttributeError, match="int8_calibrator"):
            config.int8_calibrator = None
        with pytest.raises(AttributeError, match="no setter"):
            net.get_input(0).dtype = tensorrt.DataType.HALF
        with pytest.raises(AttributeError):
            tensorrt.IInt8EntropyCalibrator2  # noqa: B018
        assert int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0  # a new value in 11
        assert builder.create_network(1 << 3) is None  # no flag has bit 3 in 11
        assert "invalid NetworkDefinitionCreationFlags" in builder.logger.errors[-1]
    with pytest.raises(AttributeError):
        tensorrt.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        tensorrt.scenario  # noqa: B018  (the fake's own helpers are not TensorRT's)
    assert tensorrt.__version__.startswith(f"{major}.")


def test_every_name_the_fake_defines_is_real():
    """The fake invents no API: each public attribute of its classes is in the real bindings (of 10 or 11)."""
    classes = {"Builder": trt.Builder, "IBuilderConfig": trt.IBuilderConfig, "INetworkDefinition":
               trt.INetworkDefinition, "ITensor": trt.ITensor, "OnnxParser": trt.OnnxParser,
               "ParserError": trt.IParserError, "IOptimizationProfile": trt.IOptimizationProfile,
               "ITimingCache": trt.ITimingCache, "ICudaEngine": trt.ICudaEngine,
               "IExecutionContext": trt.IExecutionContext, "Runtime": trt.Runtime,
               "IProgressMonitor": trt.IProgressMonitor}
    for api, cls in classes.items():
        real = set().union(*(trt.API[m]["classes"][api]["attributes"] for m in trt.MAJORS))
        mine = {n for n in vars(cls) if not n.startswith("_")}
        assert mine <= real, (api, sorted(mine - real))


def test_every_method_the_fake_defines_takes_the_real_parameter_names():
    """So a keyword argument edgehal passes (``ignore_mismatch=False``) is one the real binding accepts, under
    the same name, in the same place."""
    import inspect

    classes = {"Builder": trt.Builder, "IBuilderConfig": trt.IBuilderConfig, "INetworkDefinition":
               trt.INetworkDefinition, "OnnxParser": trt.OnnxParser, "IOptimizationProfile":
               trt.IOptimizationProfile, "ICudaEngine": trt.ICudaEngine, "IExecutionContext": trt.IExecutionContext,
               "Runtime": trt.Runtime, "ITimingCache": trt.ITimingCache}
    checked = 0
    for api, cls in classes.items():
        for name, member in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            mine = [p for p in inspect.signature(member).parameters if p != "self"]
            overloads = [o for m in trt.MAJORS for o in trt.API[m]["classes"][api]["parameters"].get(name, [])]
            assert overloads, (api, name)
            # the fake may leave out trailing parameters that have defaults in the real binding
            assert any(o[:len(mine)] == mine for o in overloads), (api, name, mine, overloads)
            checked += 1
    assert checked > 20


def _build(builder, net, config):
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28))
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(net, config)


def test_strong_typing_per_major(tmp_path, major):
    import tensorrt

    builder = trt.Builder(Recorder())
    strongly = builder.create_network(1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(strongly, builder.logger).parse_from_file(str(tm.export_cnn(tmp_path / "m.onnx")))
    config = builder.create_builder_config()
    if major == 10:
        config.set_flag(tensorrt.BuilderFlag.FP16)  # not allowed with a strongly typed network
        assert _build(builder, strongly, config) is None
        assert "kFP16 is not allowed with a strongly typed network" in builder.logger.errors[-1]
        weak = builder.create_network(0)
        assert trt.OnnxParser(weak, builder.logger).parse_from_file(str(tmp_path / "m.onnx"))
        config = builder.create_builder_config()
        config.set_flag(tensorrt.BuilderFlag.FP16)
        doc = json.loads(bytes(_build(builder, weak, config)))
        assert not doc["strongly_typed"] and doc["computes"] == ["fp16"]
    else:
        net = builder.create_network(0)  # every network is strongly typed in 11
        assert trt.OnnxParser(net, builder.logger).parse_from_file(str(tmp_path / "m.onnx"))
        doc = json.loads(bytes(_build(builder, net, builder.create_builder_config())))
        assert doc["strongly_typed"] and doc["computes"] == []  # an FP32 graph computes in FP32


def test_progress_phases_warnings_and_cancel(network):
    builder, net = network
    events = []

    class Monitor(trt.IProgressMonitor):
        def __init__(self, stop_at=None):
            trt.IProgressMonitor.__init__(self)
            self.stop_at = stop_at

        def phase_start(self, phase_name, parent_phase, num_steps):
            events.append(("start", phase_name, parent_phase, num_steps))

        def step_complete(self, phase_name, step):
            events.append(("step", phase_name, step))
            return (phase_name, step) != self.stop_at

        def phase_finish(self, phase_name):
            events.append(("finish", phase_name))

    config = builder.create_builder_config()
    with pytest.raises(TypeError):
        config.progress_monitor = "tqdm"
    config.progress_monitor = Monitor()
    assert _build(builder, net, config) is not None
    assert events[:2] == [("start", "Building engine", None, 2), ("start", "Tactic selection", "Building engine", 3)]
    assert events[-1] == ("finish", "Building engine") and builder.logger.warnings == [trt.BUILD_WARNING]
    config = builder.create_builder_config()
    config.progress_monitor = Monitor(stop_at=("Tactic selection", 1))
    assert _build(builder, net, config) is None
    assert "cancelled" in builder.logger.errors[-1]


def test_an_engine_of_the_other_major_does_not_deserialize(network, major, monkeypatch):
    builder, net = network
    plan = bytes(_build(builder, net, builder.create_builder_config()))
    other = 11 if major == 10 else 10
    for name, value in trt.configure(other).items():
        monkeypatch.setattr(trt, name, value)
    assert trt.Runtime(builder.logger).deserialize_cuda_engine(plan) is None
    assert "Version tag does not match" in builder.logger.errors[-1]
