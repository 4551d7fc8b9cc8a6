"""System shared memory (edgehal.serve.shared_memory): the registry on real /dev/shm files, then a real server
driven by tritonclient.http and tritonclient.grpc with regions made by tritonclient.utils.shared_memory."""

from __future__ import annotations

import base64

import inspect
import itertools
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import edgehal
from edgehal.errors import EdgehalError
from edgehal.serve.app import ServerOptions
from edgehal.serve.protocol import (
    InvalidRequest,
    ModelIO,
    decode_infer_request,
    encode_infer_response,
)
from edgehal.serve.shared_memory import (
    RegionExists,
    RegionNotFound,
    SharedMemoryRegistry,
)
from edgehal.tensors import TensorSpec

from .conftest import free_port
from .test_binary_offsets import _two_in_two_out

MODEL = "hal_mnist"
_serial = itertools.count()


def unique_key() -> str:
    return f"/edgehal_test_{os.getpid()}_{next(_serial)}"


@pytest.fixture
def make_region() -> Iterator[Callable[[int], tuple[str, shm.SharedMemoryRegion]]]:
    """Create POSIX shared memory objects as a client does; all are destroyed (unlinked) at the end."""
    handles = []

    def make(size: int) -> tuple[str, shm.SharedMemoryRegion]:
        key = unique_key()
        handle = shm.create_shared_memory_region(key.lstrip("/"), key, size, create_only=True)
        handles.append(handle)
        return key, handle

    yield make
    for h in handles:
        shm.destroy_shared_memory_region(h)


def shm_file(key: str) -> Path:
    return Path("/dev/shm") / key.lstrip("/")


def open_count(key: str) -> int:
    """How many file descriptors of the shared memory file of ``key`` this process holds (the client's
    handle holds some too)."""
    target = str(shm_file(key))
    fds = Path("/proc/self/fd")
    return sum(os.path.realpath(fds / fd) == target for fd in os.listdir(fds))


# ---------------------------------------------------------------------------
# The registry


def test_register_read_write_status_unregister(make_region):
    key, handle = make_region(64)
    data = np.arange(16, dtype=np.float32)
    shm.set_shared_memory_region(handle, [data])
    reg = SharedMemoryRegistry()
    client_fds = open_count(key)
    region = reg.register("r", key=key, offset=8, byte_size=32)  # bytes 8..40 of the file
    assert [r.status() for r in reg.status()] == [{"name": "r", "key": key, "offset": 8, "byte_size": 32}]
    assert reg.status("r") == [region]
    assert np.frombuffer(reg.read("r", offset=4, size=8), np.float32).tolist() == [3.0, 4.0]
    reg.write("r", offset=28, data=np.float32([-1.0]).tobytes())  # the region's last 4 bytes: file bytes 36..40
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [16]),
                                  [0, 1, 2, 3, 4, 5, 6, 7, 8, -1, 10, 11, 12, 13, 14, 15])
    assert open_count(key) == client_fds + 1
    reg.unregister("r")
    assert reg.status() == [] and open_count(key) == client_fds  # unregistering closes the server's descriptor
    with pytest.raises(RegionNotFound, match="'r' | is not registered"):
        reg.read("r", offset=0, size=4)
    reg.unregister("r")  # unknown: nothing to do, as in Triton
    assert shm_file(key).stat().st_size == 64  # the client's file is left as it was


def test_a_hostile_offset_or_size_reads_and_writes_nothing_outside_the_region(make_region):
    key, handle = make_region(48)
    shm.set_shared_memory_region(handle, [np.arange(48, dtype=np.uint8)])
    reg = SharedMemoryRegistry()
    reg.register("r", key=key, offset=16, byte_size=16)  # file bytes 16..32
    for offset, size in [(8, 16), (16, 1), (0, 17), (2**62, 4)]:
        with pytest.raises(InvalidRequest, match="past the end of region 'r' \\(16 bytes\\)"):
            reg.read("r", offset=offset, size=size)
        with pytest.raises(InvalidRequest, match="past the end of region 'r'"):
            reg.write("r", offset=offset, data=b"\xff" * min(size, 64))
    assert reg.read("r", offset=0, size=16) == bytes(range(16, 32))
    assert shm.get_contents_as_numpy(handle, np.uint8, [48]).tolist() == list(range(48))


@pytest.mark.parametrize("key,message", [
    ("../etc/passwd", "is not a POSIX shared memory name"),
    ("/dev/shm/../x", "is not a POSIX shared memory name"),
    ("a/b", "is not a POSIX shared memory name"),
    ("/a/b", "is not a POSIX shared memory name"),
    ("edgehal_no_slash", "is not a POSIX shared memory name"),
    ("/..", "is not a POSIX shared memory name"),
    ("/", "is not a POSIX shared memory name"),
    ("/x\0y", "is not a POSIX shared memory name"),
    (5, "shared memory key | is a int"),
    ("/edgehal_test_no_such_region", "does not exist"),
])
def test_keys_that_are_not_a_file_directly_in_dev_shm_are_refused(key, message):
    reg = SharedMemoryRegistry()
    with pytest.raises(InvalidRequest, match=message.replace("|", "\\|")):
        reg.register("r", key=key, offset=0, byte_size=4)
    assert reg.status() == []
    assert not Path("/dev/shm/edgehal_test_no_such_region").exists()  # never created


def test_a_symbolic_link_out_of_dev_shm_is_refused(tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"secret bytes")
    key = unique_key()
    shm_file(key).symlink_to(target)
    try:
        with pytest.raises(InvalidRequest, match="is a symbolic link"):
            SharedMemoryRegistry().register("r", key=key, offset=0, byte_size=4)
    finally:
        shm_file(key).unlink()
    assert target.read_bytes() == b"secret bytes"


def test_bad_registrations_are_refused_and_change_nothing(make_region):
    key, _ = make_region(32)
    key2, _ = make_region(32)
    reg = SharedMemoryRegistry(max_regions=2, max_bytes=48)
    with pytest.raises(InvalidRequest, match="offset 16 \\+ byte_size 17 is past the end of .* \\(32 bytes\\)"):
        reg.register("r", key=key, offset=16, byte_size=17)
    with pytest.raises(InvalidRequest, match="byte_size | is 0"):
        reg.register("r", key=key, offset=0, byte_size=0)
    with pytest.raises(InvalidRequest, match="offset | is -1"):
        reg.register("r", key=key, offset=-1, byte_size=4)
    with pytest.raises(InvalidRequest, match="is not a valid name"):
        reg.register("a/b", key=key, offset=0, byte_size=4)
    reg.register("r", key=key, offset=0, byte_size=32)
    with pytest.raises(RegionExists, match="'r' | is already registered"):
        reg.register("r", key=key2, offset=0, byte_size=4)
    with pytest.raises(InvalidRequest, match="at most 48 bytes in all"):
        reg.register("s", key=key2, offset=0, byte_size=17)
    reg.register("s", key=key2, offset=0, byte_size=16)
    with pytest.raises(InvalidRequest, match="would be region 3 of at most 2"):
        reg.register("t", key=key2, offset=16, byte_size=1)
    assert [r.name for r in reg.status()] == ["r", "s"]
    assert reg.status("r")[0].byte_size == 32  # the refused second registration changed nothing
    reg.close()
    assert reg.status() == []


def test_a_region_file_shrunk_after_registration_is_an_error_not_a_crash(make_region):
    key, _ = make_region(64)
    reg = SharedMemoryRegistry()
    reg.register("r", key=key, offset=0, byte_size=64)
    os.truncate(shm_file(key), 16)  # a client that shrinks its file; an mmap of it would SIGBUS
    with pytest.raises(InvalidRequest, match="is shorter than when it was registered"):
        reg.read("r", offset=0, size=64)
    with pytest.raises(InvalidRequest, match="is shorter than when it was registered"):
        reg.write("r", offset=32, data=b"x" * 8)
    assert shm_file(key).stat().st_size == 16  # not grown back by a write
    assert reg.read("r", offset=0, size=16) == bytes(16)


# ---------------------------------------------------------------------------
# The request parameters, decoded and encoded without a server

IO = ModelIO("m", "1", (TensorSpec("input", np.float32, (1, 4)),),
             (TensorSpec("logits", np.float32, (3,)), TensorSpec("aux", np.float32, (2,))), 8,
             {"logits": ("a", "b", "c")})


def _doc(input_params: dict, outputs: list | None = None) -> bytes:
    doc: dict = {"inputs": [{"name": "input", "shape": [2, 1, 4], "datatype": "FP32", "parameters": input_params}]}
    if outputs is not None:
        doc["outputs"] = outputs
    return json.dumps(doc).encode()


@pytest.mark.parametrize("params,outputs,message", [
    ({"shared_memory_byte_size": 32}, None, "shared_memory_byte_size or shared_memory_offset without"),
    ({"shared_memory_region": "r"}, None, "has shared_memory_region without shared_memory_byte_size"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 32, "binary_data_size": 32}, None,
     "has both shared memory and data in the body"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 32, "shared_memory_offset": -4}, None,
     "shared_memory_offset | is -4"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": True}, None, "shared_memory_byte_size | is True"),
    ({"shared_memory_region": 7, "shared_memory_byte_size": 32}, None, "shared_memory_region | is 7"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 32},
     [{"name": "logits", "parameters": {"classification": 2, "shared_memory_region": "r",
                                        "shared_memory_byte_size": 64}}],
     "asks for classification and shared memory together"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 32},
     [{"name": "logits", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 24,
                                        "shared_memory_offset": 48}}],
     "shared_memory_offset 48 + shared_memory_byte_size 24 is past the end of region 'r' (64 bytes)"),
])
def test_malformed_shared_memory_parameters_are_refused(make_region, params, outputs, message):
    key, _ = make_region(64)
    reg = SharedMemoryRegistry()
    reg.register("r", key=key, offset=0, byte_size=64)
    raw = _doc(params, outputs)
    if "binary_data_size" in params:
        raw, header = raw + bytes(32), str(len(raw))
    else:
        header = None
    with pytest.raises(InvalidRequest) as info:
        decode_infer_request(raw, header, IO, shared_memory=reg)
    assert message in str(info.value)


def test_an_output_region_that_is_not_registered_is_refused_before_the_model_runs():
    raw = json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 4], "datatype": "FP32", "data": [0] * 8}],
                      "outputs": [{"name": "aux", "parameters": {"shared_memory_region": "out",
                                                                 "shared_memory_byte_size": 8}}]}).encode()
    with pytest.raises(RegionNotFound, match="'out' | is not registered"):
        decode_infer_request(raw, None, IO, shared_memory=SharedMemoryRegistry())


def test_repeated_binary_requests_write_every_answer_to_shared_memory(make_region):
    """A binary request whose header repeats is decoded from a cached plan and its answer header is cached;
    with an output in shared memory neither cache may skip the write."""
    key, handle = make_region(64)
    reg = SharedMemoryRegistry()
    reg.register("out", key=key, offset=0, byte_size=64)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}],
                         "outputs": [{"name": "aux", "parameters": {"shared_memory_region": "out",
                                                                    "shared_memory_byte_size": 8,
                                                                    "shared_memory_offset": 8,
                                                                    "binary_data": True}},  # as tritonclient
                                     {"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    for value in (1.0, 2.0, 3.0):
        request = decode_infer_request(header + np.full(4, value, np.float32).tobytes(), str(len(header)), IO,
                                       shared_memory=reg)
        np.testing.assert_array_equal(request.inputs["input"], np.full((1, 1, 4), value, np.float32))
        results = {"logits": np.full((1, 3), value, np.float32), "aux": np.float32([[value, -value]])}
        out, hl = encode_infer_response(IO, request, results, shared_memory=reg)
        answer = json.loads(out[:hl])
        assert answer["outputs"][0] == {"name": "aux", "datatype": "FP32", "shape": [1, 2]}
        assert np.frombuffer(out[hl:], np.float32).tolist() == [value] * 3  # only logits in the body
        assert shm.get_contents_as_numpy(handle, np.float32, [1, 2], offset=8).tolist() == [[value, -value]]


def test_without_a_registry_shared_memory_is_refused():
    with pytest.raises(InvalidRequest, match="asks for shared memory, which is not available here"):
        decode_infer_request(_doc({"shared_memory_region": "r", "shared_memory_byte_size": 32}), None, IO)


# ---------------------------------------------------------------------------
# A server: HTTP and gRPC over the same registry


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory) -> Iterator[edgehal.Server]:
    pair = _two_in_two_out(tmp_path_factory.mktemp("shm_pair") / "pair.onnx")
    with edgehal.serve([model_path, pair], grpc_port=free_port(), threads=1, max_batch_size=8) as s:
        yield s


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    if request.param == "http":
        c = httpclient.InferenceServerClient(url=server.address, network_timeout=30)
    else:
        c = grpcclient.InferenceServerClient(url=server.grpc_address)
    yield c
    c.unregister_system_shared_memory()
    assert _status(c) == {}
    c.close()


def _mod(c):
    return httpclient if isinstance(c, httpclient.InferenceServerClient) else grpcclient


def _status(c, name: str = "") -> dict[str, dict]:
    """The status as ``{name: {key, offset, byte_size}}`` from either client."""
    if isinstance(c, httpclient.InferenceServerClient):
        return {r["name"]: {k: r[k] for k in ("key", "offset", "byte_size")}
                for r in c.get_system_shared_memory_status(name)}
    regions = c.get_system_shared_memory_status(name).regions
    return {n: {"key": r.key, "offset": r.offset, "byte_size": r.byte_size} for n, r in regions.items()}


def _error(call) -> tuple[str, str]:
    """``(status, message)`` of the error tritonclient raises: "400"/"404" (HTTP) or "StatusCode.X" (gRPC)."""
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status(), info.value.message()


def _code(c, http: str, grpc_code: grpc.StatusCode) -> str:
    return http if isinstance(c, httpclient.InferenceServerClient) else str(grpc_code)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def test_server_metadata_lists_system_shared_memory(server):
    c = httpclient.InferenceServerClient(url=server.address)
    assert "system_shared_memory" in c.get_server_metadata()["extensions"]
    assert "cuda_shared_memory" not in c.get_server_metadata()["extensions"]


def test_input_and_both_heads_through_shared_memory_equal_onnxruntime(client, ort_session, make_region):
    mod = _mod(client)
    x = images(3)
    logits, aux = ort_session.run(["logits", "aux_case1"], {"input": x})
    in_key, in_handle = make_region(64 + x.nbytes)  # the tensor at an offset into the file and the region
    out_key, out_handle = make_region(1024)
    shm.set_shared_memory_region(in_handle, [x], offset=64)
    client.register_system_shared_memory("in", in_key, x.nbytes + 16, offset=48)
    client.register_system_shared_memory("out", out_key, 1024)
    assert _status(client) == {"in": {"key": in_key, "offset": 48, "byte_size": x.nbytes + 16},
                               "out": {"key": out_key, "offset": 0, "byte_size": 1024}}
    assert _status(client, "out") == {"out": {"key": out_key, "offset": 0, "byte_size": 1024}}

    inp = mod.InferInput("input", list(x.shape), "FP32")
    inp.set_shared_memory("in", x.nbytes, offset=16)
    out_logits, out_aux = mod.InferRequestedOutput("logits"), mod.InferRequestedOutput("aux_case1")
    out_logits.set_shared_memory("out", logits.nbytes, offset=100)
    out_aux.set_shared_memory("out", 512, offset=500)  # larger than needed: fine, as in Triton
    result = client.infer(MODEL, [inp], outputs=[out_logits, out_aux])

    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [3, 10], offset=100), logits)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [3, 2], offset=500), aux)
    got = shm.get_contents_as_numpy(out_handle, np.uint8, [1024])
    assert not got[:100].any() and not got[100 + logits.nbytes:500].any()  # nothing written around them
    for name, shape in (("logits", [3, 10]), ("aux_case1", [3, 2])):
        meta = result.get_output(name)
        if isinstance(meta, dict):  # HTTP: name, datatype and shape only, no data (as Triton answers)
            assert meta == {"name": name, "datatype": "FP32", "shape": shape}
        else:
            assert (meta.name, meta.datatype, list(meta.shape)) == (name, "FP32", shape)
    if mod is grpcclient:  # one (empty) raw entry per output, as Triton's gRPC answer has
        assert list(result.get_response().raw_output_contents) == [b"", b""]

    client.unregister_system_shared_memory("in")
    assert list(_status(client)) == ["out"]


def test_each_input_is_read_at_its_own_offset_and_outputs_may_stay_in_the_body(client, make_region):
    mod = _mod(client)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 100.0, np.float32) + a[::-1]
    key, handle = make_region(256)
    shm.set_shared_memory_region(handle, [b], offset=0)
    shm.set_shared_memory_region(handle, [a], offset=128)
    client.register_system_shared_memory("pairs", key, 256)
    ia, ib = mod.InferInput("a", [2, 3], "FP32"), mod.InferInput("b", [2, 3], "FP32")
    ia.set_shared_memory("pairs", a.nbytes, offset=128)
    ib.set_shared_memory("pairs", b.nbytes)
    result = client.infer("pair", [ia, ib])  # both inputs from one region, the outputs in the body
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
    np.testing.assert_array_equal(result.as_numpy("total"), a + 2 * b)

    # mixed: one input from shared memory, one in the body; one output to the region, one in the body
    ia = mod.InferInput("a", [2, 3], "FP32")
    ia.set_data_from_numpy(a)
    total = mod.InferRequestedOutput("total")
    total.set_shared_memory("pairs", 24, offset=200)
    result = client.infer("pair", [ia, ib], outputs=[mod.InferRequestedOutput("diff"), total])
    np.testing.assert_array_equal(result.as_numpy("diff"), a - b)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [2, 3], offset=200), a + 2 * b)


def test_bad_shared_memory_requests_get_specific_errors_and_the_server_keeps_serving(client, make_region,
                                                                                     tmp_path):
    mod = _mod(client)
    x = images(1)
    key, handle = make_region(x.nbytes + 16)
    shm.set_shared_memory_region(handle, [x])
    client.register_system_shared_memory("img", key, x.nbytes + 16)
    small_key, small_handle = make_region(16)
    client.register_system_shared_memory("small", small_key, 16)

    def infer_from(region: str, size: int, offset: int = 0, outputs=None):
        inp = mod.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_shared_memory(region, size, offset=offset)
        return lambda: client.infer(MODEL, [inp], outputs=outputs)

    bad_request = _code(client, "400", grpc.StatusCode.INVALID_ARGUMENT)
    status, message = _error(infer_from("nope", x.nbytes))
    assert status == _code(client, "404", grpc.StatusCode.NOT_FOUND)
    assert "shared memory region 'nope' | is not registered" in message
    status, message = _error(infer_from("small", x.nbytes))  # too small for the tensor
    assert status == bad_request and "past the end of region 'small' (16 bytes)" in message
    pair_inputs = [mod.InferInput("a", [1, 3], "FP32"), mod.InferInput("b", [1, 3], "FP32")]
    for t in pair_inputs:
        t.set_shared_memory("small", 12, offset=8)  # hostile offset: 8 + 12 > 16
    status, message = _error(lambda: client.infer("pair", pair_inputs))
    assert status == bad_request and "shared_memory_offset 8 + shared_memory_byte_size 12 is past the end" in message
    status, message = _error(infer_from("img", x.nbytes, offset=x.nbytes + 16))
    assert status == bad_request and f"shared_memory_offset {x.nbytes + 16} is past the end" in message
    status, message = _error(infer_from("img", x.nbytes - 4))  # not the tensor's size
    assert status == bad_request and f"is {x.nbytes - 4} bytes" in message and f"{x.nbytes} bytes: shape" in message

    out = mod.InferRequestedOutput("logits")
    out.set_shared_memory("small", 16)  # 40 bytes of logits do not fit: an error, not a truncation
    status, message = _error(infer_from("img", x.nbytes, outputs=[out]))
    assert status == bad_request and "shared_memory_byte_size | is 16 bytes but the output has 40 bytes" in message
    assert not shm.get_contents_as_numpy(small_handle, np.uint8, [16]).any()

    for bad_key in ("../etc/passwd", "/dev/shm/../x", "a/b"):
        status, message = _error(lambda: client.register_system_shared_memory("evil", bad_key, 4))
        assert status == bad_request and "is not a POSIX shared memory name" in message
    link = unique_key()
    (tmp_path / "outside").write_bytes(bytes(64))
    shm_file(link).symlink_to(tmp_path / "outside")
    try:
        status, message = _error(lambda: client.register_system_shared_memory("evil", link, 4))
    finally:
        shm_file(link).unlink()
    assert status == bad_request and "is a symbolic link" in message
    status, message = _error(lambda: client.register_system_shared_memory("img", key, 4))
    assert status == _code(client, "400", grpc.StatusCode.ALREADY_EXISTS)
    assert "shared memory region 'img' | is already registered" in message
    status, message = _error(lambda: client.get_system_shared_memory_status("nope"))
    assert status == _code(client, "404", grpc.StatusCode.NOT_FOUND) and "'nope' | is not registered" in message

    assert set(_status(client)) == {"img", "small"}
    assert client.is_server_ready() and client.is_model_ready(MODEL)
    result = client.infer(MODEL, _inputs_from(mod, "img", x.nbytes))
    assert result.as_numpy("logits").shape == (1, 10)


def test_cuda_shared_memory_answers_as_triton_without_gpus(client, make_region):
    """No CUDA region can be registered; status lists none and unregistering succeeds, so clients
    that clean up both kinds of region (perf_analyzer does) finish without an error. System
    regions are untouched by all of it."""
    key, _ = make_region(16)
    client.register_system_shared_memory("sys", key, 16)
    try:
        if isinstance(client, httpclient.InferenceServerClient):
            assert client.get_cuda_shared_memory_status() == []
            handle = base64.b64encode(bytes(64)).decode()  # the HTTP client sends it as given, in "b64"
        else:
            assert not client.get_cuda_shared_memory_status().regions
            handle = bytes(64)
        status, message = _error(lambda: client.register_cuda_shared_memory("gpu", handle, 0, 16))
        assert status == _code(client, "400", grpc.StatusCode.INVALID_ARGUMENT)
        assert "CUDA shared memory region 'gpu' | cannot be registered" in message and "system shared memory" in message
        status, message = _error(lambda: client.get_cuda_shared_memory_status("gpu"))
        assert status == _code(client, "404", grpc.StatusCode.NOT_FOUND) and "'gpu' | is not registered" in message
        client.unregister_cuda_shared_memory("gpu")
        client.unregister_cuda_shared_memory()
        assert set(_status(client)) == {"sys"}
    finally:
        client.unregister_system_shared_memory("sys")


def _inputs_from(mod, region: str, size: int) -> list:
    inp = mod.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_shared_memory(region, size)
    return [inp]


def test_grpc_raw_contents_must_match_the_inputs_not_in_shared_memory(server, make_region):
    a = np.ones((1, 3), np.float32)
    key, handle = make_region(12)
    shm.set_shared_memory_region(handle, [a])
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.SystemSharedMemoryRegister(service_pb2.SystemSharedMemoryRegisterRequest(
            name="a", key=key, offset=0, byte_size=12))
        try:
            request = service_pb2.ModelInferRequest(model_name="pair")
            ta = request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
            ta.parameters["shared_memory_region"].string_param = "a"
            ta.parameters["shared_memory_byte_size"].int64_param = 12
            request.inputs.add(name="b", datatype="FP32", shape=[1, 3])
            request.raw_input_contents.extend([a.tobytes(), a.tobytes()])  # one too many
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "has 2 entries for 1 inputs not in shared memory" in info.value.details()
            del request.raw_input_contents[1]
            response = stub.ModelInfer(request)
            assert [o.name for o in response.outputs] == ["diff", "total"]
            np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[1], np.float32), [3, 3, 3])
        finally:
            stub.SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(name=""))


def test_http_register_body_is_checked(server, make_region):
    from .conftest import http_call

    key, _ = make_region(16)
    url = f"http://{server.address}/v2/systemsharedmemory/region/r/register"
    for body, message in [(b"[]", "register request | is a JSON list"),
                          (b'{"key": "' + key.encode() + b'", "offset": 0}', "byte_size | is None"),
                          (b'{"key": "' + key.encode() + b'", "offset": 0, "byte_size": 1.5}', "byte_size | is 1.5"),
                          (b"{", "is not valid JSON")]:
        status, answer = http_call("POST", url, body)
        assert status == 400 and message in answer.decode(), answer
    status, answer = http_call("GET", f"http://{server.address}/v2/systemsharedmemory/status")
    assert (status, answer) == (200, b"[]")


def test_the_server_closes_every_region_when_it_stops_and_checks_its_limits(model_path, make_region):
    key, _ = make_region(16)
    client_fds = open_count(key)
    with edgehal.serve([model_path], threads=1) as s:
        httpclient.InferenceServerClient(url=s.address).register_system_shared_memory("r", key, 16)
        assert open_count(key) == client_fds + 1
    assert open_count(key) == client_fds
    assert shm_file(key).stat().st_size == 16  # the client's file stays, unchanged
    with pytest.raises(EdgehalError, match="shared memory limits"):
        ServerOptions(max_shared_memory_regions=-1)


def test_the_shared_memory_limits_are_options_of_serve_and_the_cli(model_path, make_region, tmp_path):
    from edgehal.cli import serve_cmd
    from edgehal.serve.shared_memory import DEFAULT_MAX_BYTES, DEFAULT_MAX_REGIONS

    from .conftest import run_server

    # The documented defaults are the registry's own.
    defaults = {p.name: p.default for p in serve_cmd.params}
    assert (defaults["max_shared_memory_regions"], defaults["max_shared_memory_bytes"]) == (
        DEFAULT_MAX_REGIONS, DEFAULT_MAX_BYTES)
    signature = inspect.signature(edgehal.serve).parameters
    assert (signature["max_shared_memory_regions"].default, signature["max_shared_memory_bytes"].default) == (
        DEFAULT_MAX_REGIONS, DEFAULT_MAX_BYTES)
    key, _ = make_region(64)
    # In process: one region at most; the second registration is refused and the first stays.
    with edgehal.serve([model_path], threads=1, max_shared_memory_regions=1) as s:
        client = httpclient.InferenceServerClient(url=s.address)
        client.register_system_shared_memory("a", key, 16)
        with pytest.raises(InferenceServerException, match="would be region 2 of at most 1"):
            client.register_system_shared_memory("b", key, 16, offset=16)
        assert [r["name"] for r in client.get_system_shared_memory_status()] == ["a"]
    # From the command line: 32 bytes in all.
    with run_server([model_path], tmp_path / "logs", "--max-shared-memory-bytes", "32") as server:
        client = httpclient.InferenceServerClient(url=server.url)
        client.register_system_shared_memory("a", key, 32)
        with pytest.raises(InferenceServerException, match="at most 32 bytes in all"):
            client.register_system_shared_memory("b", key, 1, offset=32)
