"""The localization model served with raw 520-value RSSI vectors."""

import json

import numpy as np

from .conftest import run_server


def test_served_with_raw_rssi_vectors(loc_exports, data_root, tmp_path):
    import tritonclient.http as httpclient

    from edgehal.data import build_dataset
    from edgehal.runtime.onnxruntime import OnnxRuntimeRunner

    raw = build_dataset("ujiindoorloc", root=data_root).test.x[:16].numpy()
    assert raw.shape == (16, 520) and (raw == 100).any()  # raw dBm, 100 = not detected
    model = loc_exports["prune"]
    with OnnxRuntimeRunner(model) as runner:
        want = runner.infer({runner.input_specs()[0].name: raw})
    with run_server([model], tmp_path / "logs") as srv:
        client = httpclient.InferenceServerClient(url=srv.url)
        meta = client.get_model_metadata(model.stem)
        assert meta["inputs"][0]["shape"] == [-1, 520]
        manifest = json.loads(meta["parameters"]["edgehal.manifest"])
        assert [h["name"] for h in manifest["heads"]] == ["building_floor", "coordinates"]
        inp = httpclient.InferInput(meta["inputs"][0]["name"], list(raw.shape), "FP32")
        inp.set_data_from_numpy(raw, binary_data=True)
        result = client.infer(model.stem, [inp])
        client.close()
    np.testing.assert_allclose(result.as_numpy("coordinates"), want["coordinates"], atol=1e-4)
    assert (result.as_numpy("building_floor").argmax(1) == want["building_floor"].argmax(1)).all()
