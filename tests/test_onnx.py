"""ONNX export: pruned and low-rank encoders under ONNX Runtime."""

import pytest
import torch
from helpers import random_batch, tiny_conformer

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from sb_prune import convert  # noqa: E402
from sb_prune.deploy.onnx import (  # noqa: E402
    ONNX_FILE,
    export_onnx,
    ort_session,
)
from sb_prune.deploy.torchscript import TransformerEncode  # noqa: E402


def _initializer_elements(path):
    import onnx

    graph = onnx.load(str(path)).graph
    return sum(
        int(torch.tensor(list(t.dims)).prod()) for t in graph.initializer
    )


def test_pruned_run_exports_at_pruned_shapes(tiny_adaptive_run, tmp_path):
    from sb_prune.deploy.pretrained import export_pretrained, load_model
    from sb_prune.deploy.torchscript import CTCEncoder

    summary = export_pretrained(tiny_adaptive_run, tmp_path, onnx=True)
    assert summary["onnx"]["max_abs_diff"] <= 1e-4
    hparams = load_model(tmp_path)
    model = CTCEncoder.from_hparams(hparams)
    feats = torch.randn(1, 271, hparams["n_mels"])
    with torch.no_grad():
        expected = model(feats, torch.ones(1))
    got = ort_session(tmp_path / ONNX_FILE)(feats, torch.ones(1))
    assert (got - expected).abs().max() <= 1e-4
    # The graph stores the pruned weights, not dense ones.
    stored = sum(p.numel() for p in model.parameters())
    assert _initializer_elements(tmp_path / ONNX_FILE) <= 1.02 * stored


@pytest.mark.parametrize(
    "conversion",
    [
        {"low_rank": {"points": ["ffn", "attention"], "rank": 3}},
        {"prunable_attention": {}},
    ],
)
def test_low_rank_and_ragged_models_export(tmp_path, conversion):
    from sb_prune.core.surgery import apply_plan

    model = convert(tiny_conformer(), **conversion)
    if "prunable_attention" in conversion:  # ragged heads, one without
        mha = model.encoder.layers[0].mha_layer  # query/key units
        qk = torch.tensor([0, 1, 2, 5, 6, 12, 13, 14, 15])
        v = torch.tensor([2, 5, 6, 9, 12, 13, 14, 15])
        apply_plan(mha, {"": {"qk": qk, "v": v}})
        assert mha.qk_dims == [3, 2, 0, 4]
    x, lens = random_batch(batch=2, time=9)
    check = random_batch(batch=2, time=23, seed=2)
    difference = export_onnx(
        TransformerEncode(model).eval(), tmp_path / "m.onnx", (x, lens), check
    )
    assert difference <= 1e-4


def test_unexportable_part_is_named(tmp_path):
    model = convert(tiny_conformer(), dynamic_depth={"predictor": "local"})
    x, lens = random_batch()
    with pytest.raises(
        ValueError, match=r"transformer\.encoder \(GatedConformerEncoder\)"
    ):
        export_onnx(
            TransformerEncode(model).eval(),
            tmp_path / "m.onnx",
            (x, lens),
            (x, lens),
        )
