"""The model stages: weights (``hf``), ``trace``, ``compile``, ``wasm_link``, ``shard`` and ``verify``, and what they
share (``params``: the traced weights and how they are stored; ``verify_policy``: which models are verified)."""
