"""Training defaults that the settings and the code using them share, importable without torch: ``TrainConfig``
(:mod:`metaembed.training.config`, which ``metaembed train --help`` reads) takes its defaults from here, and the
loss (:mod:`metaembed.training.mmr_loss`) too."""

DEFAULT_TEMPERATURE = 0.03
"""The paper's temperature (second-hand, see PAPER.md); scores are divided by it before the softmax."""

DISTILL_TEACHERS = ("tokens", "sentences")
"""What the distillation teacher scores a pair by (metaembed.training.regularizers): the backbone's token-level
MaxSim, or the document's best sentence encoded alone."""

MMR_NESTINGS = ("shared", "boosted")
"""How MMR's groups share the vectors' gradients: ``shared`` (the paper: every group's loss trains every vector of its
prefix) or ``boosted`` (a group's loss trains only the vectors the largest group nested inside it lacks; that
group's similarities enter its MaxSim detached, so a larger budget learns what the smaller one misses)."""
