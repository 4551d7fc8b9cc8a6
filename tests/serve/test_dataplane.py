"""The data plane without HTTP: model lookup, readiness, inference bytes, shutdown."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from edgehal.serve.dataplane import DataPlane
from edgehal.serve.protocol import InvalidRequest, ModelNotFound, Unavailable
from edgehal.serve.repository import ModelOptions, discover, load


def _plane(model_path) -> DataPlane:
    models = load(discover([model_path]), ModelOptions(threads=1, max_batch_size=8))
    return DataPlane(models, server_name="edgehal", server_version="t", extensions=[], inline=True)


def test_lookup_readiness_inference_and_shutdown(model_path, ort_session):
    async def scenario():
        plane = _plane(model_path)
        name = plane.describe()[0]["name"]
        served = plane.get(name, None)
        assert served is plane.get(name, "1")
        with pytest.raises(ModelNotFound):
            plane.get("nope", None)
        with pytest.raises(ModelNotFound):
            plane.get(name, "7")
        assert not plane.ready
        with pytest.raises(Unavailable):
            plane.check_model_ready(served)
        await plane.start()
        assert plane.ready
        x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32) * 255
        body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}],
                           "outputs": [{"name": "aux_case1", "parameters": {"binary_data": False}}]}).encode()
        out, header_length = await plane.infer(served, body, None)
        doc = json.loads(out)
        assert header_length is None and [o["name"] for o in doc["outputs"]] == ["aux_case1"]
        want = ort_session.run(["aux_case1"], {"input": x})[0]
        np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"]).reshape(want.shape), want, rtol=1e-5,
                                   atol=1e-5)
        with pytest.raises(InvalidRequest):
            await plane.infer(served, b"{not json", None)
        await plane.close()
        assert not plane.ready
        with pytest.raises(Unavailable):
            plane.check_server_ready()

    asyncio.run(scenario())
