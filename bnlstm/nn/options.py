"""The choices the model layer accepts, as plain tuples (no torch: the settings table
``bnlstm.training.config`` and the dashboard read them without loading the model)."""

NORMS = ("none", "input", "full")               # BNLSTM: nothing, W_x x only, the paper's BN-LSTM
STATS = ("per_step", "shared")                  # population statistics per step, or one set
INITS = ("paper", "authors", "orthogonal", "pytorch")
TANH_NORMS = ("sum", "full", "input", "none")   # BNTanhRNN (Figure 1a)


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
