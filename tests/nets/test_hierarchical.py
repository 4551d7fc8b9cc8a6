"""The one hierarchical head: weighted vs hard semantics, placement, routing, ONNX export."""

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from edgehal.errors import EdgehalError
from edgehal.nets.hierarchical import IMPOSSIBLE, HierarchicalHead, route, routed_nll


def _head(combine, *, task="classification", branch_classes=None, num_fine=5, k=3, d=6, seed=0):
    torch.manual_seed(seed)
    widths = [len(c) for c in branch_classes] if branch_classes else [num_fine] * k
    return HierarchicalHead(coarse=nn.Linear(d, k), branches=[nn.Linear(d, w) for w in widths],
                            combine=combine, num_fine=num_fine, task=task, branch_classes=branch_classes)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_weighted_is_the_hdcnn_mixture():
    head = _head("weighted").eval()
    x = torch.randn(7, 6)
    with torch.no_grad():
        out = head(x)
    coarse = _softmax(out.coarse.numpy())
    fine = np.stack([_softmax(b.numpy()) for b in out.branches], axis=1)   # (N, K, C)
    expected = (coarse[:, :, None] * fine).sum(axis=1)                     # sum_k P(k|x) p_k(y|x)
    np.testing.assert_allclose(np.exp(out.combined.numpy()), expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(out.combined.numpy()).sum(1), 1.0, atol=1e-5)


def test_hard_is_the_predicted_coarse_class_branch():
    head = _head("hard").eval()
    x = torch.randn(9, 6)
    with torch.no_grad():
        out = head(x)
    k_star = out.coarse.argmax(1)
    assert len(set(k_star.tolist())) > 1  # the batch really routes to different branches
    for n in range(9):
        expected = torch.log_softmax(out.branches[int(k_star[n])][n], dim=0)
        torch.testing.assert_close(out.combined[n], expected)


def test_branches_placed_into_the_fine_space():
    classes = [[0, 1], [2, 3, 4], [5]]
    for combine in ("weighted", "hard"):
        head = _head(combine, branch_classes=classes, num_fine=6).eval()
        with torch.no_grad():
            out = head(torch.randn(5, 6))
        assert out.scores.shape == (5, 3, 6)
        p = np.exp(out.combined.numpy())
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
        # branch k gives exactly zero probability to classes it does not score
        for k, cls in enumerate(classes):
            others = [c for c in range(6) if c not in cls]
            assert torch.all(out.scores[:, k, others] == IMPOSSIBLE)
        if combine == "hard":  # the decision lies in the predicted coarse class
            k_star = out.coarse.argmax(1).numpy()
            for n, c in enumerate(p.argmax(1)):
                assert c in classes[k_star[n]]
        else:  # P(y) = P(k(y)) p_k(y): the probability of a coarse class is its coarse probability
            pk = _softmax(out.coarse.numpy())
            for k, cls in enumerate(classes):
                np.testing.assert_allclose(p[:, cls].sum(1), pk[:, k], atol=1e-5)


def test_regression_weighted_mean_and_hard_route():
    for combine in ("weighted", "hard"):
        head = _head(combine, task="regression", num_fine=2).eval()
        with torch.no_grad():
            out = head(torch.randn(6, 6))
        stacked = torch.stack(out.branches, 1)
        if combine == "weighted":
            expected = (torch.softmax(out.coarse, 1).unsqueeze(2) * stacked).sum(1)
        else:
            expected = stacked[torch.arange(6), out.coarse.argmax(1)]
        torch.testing.assert_close(out.combined, expected)


def test_shared_router_from_another_head():
    floors = _head("hard", branch_classes=[[0], [1, 2]], num_fine=3, k=2)
    coords = HierarchicalHead(coarse=None, branches=[nn.Linear(6, 2), nn.Linear(6, 2)], combine="hard",
                              num_fine=2, task="regression")
    x = torch.randn(4, 6)
    out = coords(x, coarse_logits=floors(x).coarse)
    assert out.combined.shape == (4, 2)
    with pytest.raises(EdgehalError, match="no coarse head"):
        coords(x)


def test_routed_nll_trains_only_the_true_coarse_class_branch():
    head = _head("hard", branch_classes=[[0, 1], [2, 3], [4]], num_fine=5)
    x = torch.randn(8, 6)
    out = head(x)
    coarse_target = torch.full((8,), 1)
    fine_target = torch.tensor([2, 3] * 4)
    routed_nll(out.scores, coarse_target, fine_target).backward()
    grads = [b.weight.grad for b in head.branches]
    assert grads[1] is not None and grads[1].abs().sum() > 0
    for k in (0, 2):
        assert grads[k] is None or torch.all(grads[k] == 0)
    # and it is the NLL of branch 1 on its own classes
    expected = nn.functional.cross_entropy(out.branches[1], fine_target - 2)
    torch.testing.assert_close(routed_nll(out.scores, coarse_target, fine_target), expected)


def test_route_gathers_per_sample():
    scores = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    torch.testing.assert_close(route(scores, torch.tensor([2, 0])), torch.stack([scores[0, 2], scores[1, 0]]))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(EdgehalError, match="combination rule"):
        _head("average")
    with pytest.raises(EdgehalError, match="branch_classes"):
        _head("hard", branch_classes=[[0, 9], [1]], num_fine=5, k=2)


class _Both(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, x):
        out = self.head(x)
        return out.coarse, out.combined


@pytest.mark.parametrize("combine", ["weighted", "hard"])
def test_exports_to_onnx_without_control_flow(combine):
    ort = pytest.importorskip("onnxruntime")
    model = _Both(_head(combine, branch_classes=[[0, 1], [2, 3, 4]], num_fine=5, k=2)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 6),), buf, input_names=["x"], output_names=["coarse", "fine"],
                          dynamic_axes={"x": {0: "batch"}, "coarse": {0: "batch"}, "fine": {0: "batch"}},
                          opset_version=17, dynamo=False)
    import onnx
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert not ops & {"If", "Loop"}
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(33, 6)
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    got = sess.run(None, {"x": x.numpy()})
    for g, w in zip(got, want):
        assert np.abs(g - w).max() < 1e-4
        assert np.array_equal(g.argmax(1), w.argmax(1))
