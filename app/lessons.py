"""What the page teaches, as data: the presets (the classic comparisons, each a pair of
runs) and the page's stylesheets. Each section's title and "point at" sentence stay beside
the plots they name, in its module of ``app/sections/``."""

# (label, css class, [(tag, overrides), (tag, overrides)])
PRESETS = [
    ("LSTM vs BN-LSTM", "preset-lstm",
     [("LSTM", dict(model="lstm")), ("BN-LSTM", dict(model="bnlstm", gamma_init=0.1))]),
    ("gamma 0.1 vs 1.0", "preset-gamma",
     [("gamma 0.1", dict(model="bnlstm", gamma_init=0.1)),
      ("gamma 1.0", dict(model="bnlstm", gamma_init=1.0))]),
    ("per-step vs shared statistics", "preset-stats",
     [("per-step", dict(model="bnlstm", stats="per_step")),
      ("shared", dict(model="bnlstm", stats="shared"))]),
    # Figure 1a on pixel 7x7 (49 steps): the authors' BN tanh-RNN (one BN over W_h h + W_x x,
    # W_h = I). On the row task the 28 inputs per step outweigh the recurrent term inside that
    # BN and the picture changes (docs/results.md), so these two set the task.
    ("tanh-RNN: gamma 0.1 vs 1.0 (Fig. 1a)", "preset-tanh",
     [("tanh-RNN gamma 0.1", dict(model="bn-tanh-rnn", task="pixel7", init="paper",
                                  gamma_init=0.1)),
      ("tanh-RNN gamma 1.0", dict(model="bn-tanh-rnn", task="pixel7", init="paper",
                                  gamma_init=1.0))]),
    ("why init matters: W_h identity vs orthogonal", "preset-init",
     [("tanh-RNN g=1 W_h identity", dict(model="bn-tanh-rnn", task="pixel7", init="paper",
                                         gamma_init=1.0)),
      ("tanh-RNN g=1 W_h orthogonal", dict(model="bn-tanh-rnn", task="pixel7",
                                           init="orthogonal", gamma_init=1.0))]),
]

def preset(slug: str):
    """The pair of the preset called ``slug`` (its css class without ``preset-``: ``lstm``,
    ``gamma``, ``stats``, ``tanh``, ``init``; a link's ``?preset=``), or None."""
    for label, cls, pair in PRESETS:
        if cls == f"preset-{slug}":
            return label, pair
    return None


PRESET_SLUGS = [cls[len("preset-"):] for _, cls, _ in PRESETS]

# A toggle's chosen side, readable from the back of a room: filled dark blue, white bold
# text; the other sides white with a blue outline.
TOGGLE_CSS = """
.bk-btn-group .bk-btn { font-size: 15px; }
.bk-btn-group .bk-btn.bk-active { background-color: #1f4e79 !important; color: #fff !important;
                                  font-weight: 700; border-color: #1f4e79 !important; }
"""

CSS = """
table { border-collapse: collapse; font-size: 17px; width: 100%; }
td, th { padding: 4px 10px; text-align: left; border-bottom: 1px solid #ddd; }
td .reason { overflow-wrap: anywhere; }
.badge { color: white; border-radius: 6px; padding: 2px 8px; font-weight: 600; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; margin-right: 6px; }
.server { color: #555; font-size: 15px; margin-top: 4px; }
.legend { font-size: 17px; display: flex; flex-wrap: wrap; gap: 6px 22px; }
.legend .swatch { width: 22px; height: 6px; vertical-align: middle; border-radius: 2px; }
.share { color: #555; font-size: 15px; }
.lower-wait { color: #777; font-size: 16px; }
"""
