"""The model-agnostic mechanism: specs, surgery, structure records.

One registry of module-type specs (registry, specs), the one removal path
(surgery), the structure record saved with checkpoints (structure), in-place
resizing that keeps optimizer state aligned (inplace), finding encoders and
their layers (encoders), and the validation of YAML values (validation).

Authors
 * sb_prune developers
"""
