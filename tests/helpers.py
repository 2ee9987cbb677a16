"""Small models and runners shared by the tests."""

import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.lobes.models.transformer.TransformerLM import TransformerLM

HERE = Path(__file__).parent


def tiny_conformer(layers=2, d_model=16, heads=4, d_ffn=32, seed=0):
    """A CTC-style Conformer TransformerASR (encoder only), in eval mode."""
    torch.manual_seed(seed)
    return TransformerASR(
        tgt_vocab=10,
        input_size=12,
        d_model=d_model,
        nhead=heads,
        num_encoder_layers=layers,
        num_decoder_layers=0,
        d_ffn=d_ffn,
        dropout=0.0,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    ).eval()


def tiny_lm(padded_row=0):
    """A TransformerLM in eval mode and a batch of tokens, one row padded."""
    torch.manual_seed(0)
    lm = TransformerLM(
        30, d_model=16, nhead=4, num_encoder_layers=2, d_ffn=32, dropout=0.0
    ).eval()
    tokens = torch.randint(1, 30, (3, 9))
    tokens[padded_row, 6:] = 0
    return lm, tokens


def free_port():
    """A TCP port that nothing listens on now, chosen by the system.

    For the master of a DDP test: a fixed port collides when tests run in
    parallel (``pytest -n``) or on a shared machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def run_two_processes(script, folder):
    """Run ``script folder`` in two gloo processes (torch.distributed.run).

    The master listens on a free port (:func:`free_port`). Returns what
    ranks 0 and 1 saved in ``folder/rank0.pt`` and ``folder/rank1.pt``.
    """
    # The checkout's sb_prune, not an installed copy of another checkout.
    path = os.pathsep.join([str(HERE), str(HERE.parent)])
    # torch.distributed.run's log folders go with the test's, not in /tmp.
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, TMPDIR=str(folder)
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            str(script),
            str(folder),
        ],
        check=True,
        env=env,
        cwd=folder,
        timeout=240,
    )
    return torch.load(folder / "rank0.pt"), torch.load(folder / "rank1.pt")


def encode(model, x, lens):
    """Encoder output of a TransformerASR for features x and relative lens."""
    with torch.no_grad():
        return model.encode(x, lens)


def random_batch(batch=3, time=11, feats=12, seed=1):
    """Features and relative lengths with padding in all but one item."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, time, feats, generator=gen)
    lens = torch.linspace(1.0, 0.5, batch)
    return x, lens


#: Hugging Face SSL models with a tiny random configuration, by name.
SSL_MODELS = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}


def tiny_ssl_model(name, layers, seed=0):
    """A randomly initialised SSL model of ``SSL_MODELS`` (eval mode).

    Hidden size 16, 2 heads, FFN 32, a 2-block feature extractor; needs
    ``transformers`` (the caller skips without it).
    """
    import transformers

    config_name, model_name = SSL_MODELS[name]
    config = getattr(transformers, config_name)(
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(seed)
    return getattr(transformers, model_name)(config).eval()


def tiny_whisper(seed=0, encoder_layers=2, max_source_positions=10):
    """A random Whisper of width 16, 2 decoder layers (non-zero biases);
    its encoder reads ``2 x max_source_positions`` frames."""
    import transformers

    config = transformers.WhisperConfig(
        vocab_size=60,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=encoder_layers,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=max_source_positions,
        max_target_positions=12,
        pad_token_id=50,
        bos_token_id=50,
        eos_token_id=50,
        decoder_start_token_id=51,
    )
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # biases are zero at initialisation: make them not
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_()
    return model


#: Data type codes of CTranslate2's model.bin.
CODES = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}


def prune_by_magnitude(model, kept):
    """Keep, of each member (criteria's ``find_members``) in ``kept``, its
    ``kept[member]`` units of largest magnitude, in their order."""
    from sb_prune.core.surgery import apply_plan
    from sb_prune.methods.criteria.criteria import make_criterion

    criterion = make_criterion("magnitude")
    plan = {}
    for member, count in kept.items():
        order = criterion.score(member).argsort(descending=True)[:count]
        plan[member.path] = member.plan(order.sort().values)
    apply_plan(model, plan)


def write_model_bin(path, variables, spec="WhisperSpec", version=6, code=None):
    """A model.bin in CTranslate2's layout (float arrays as float16).

    ``code`` overrides every variable's data type code. Written for the
    tests of ``read_model_bin``; ``benchmarks/fuzz_inputs.py`` mutates its
    files.
    """

    def string(text):
        data = text.encode()
        return struct.pack("<H", len(data) + 1) + data + b"\0"

    blob = struct.pack("<I", version) + string(spec) + struct.pack("<I", 3)
    blob += struct.pack("<I", len(variables))
    for name, value in variables.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float16)
        blob += string(name) + struct.pack("<B", value.ndim)
        blob += b"".join(struct.pack("<I", d) for d in value.shape)
        dtype = code if code is not None else CODES[value.dtype.type]
        blob += struct.pack("<BI", dtype, value.nbytes) + value.tobytes()
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    aliases = {a: t for a, t in aliases.items() if t in variables}
    blob += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        blob += string(alias) + string(target)
    Path(path).write_bytes(blob)
