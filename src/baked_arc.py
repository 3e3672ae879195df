"""`BakedArc`: a search-mode arc fixed at trace time (the benchmark's floor).

Every search child (macro, micro, PTB) takes its arc as an int32 tensor, so
one trace serves every architecture. A `BakedArc` holds the arc as Python
ints instead: the child then runs its choices without `tf.switch_case`,
masking by skip bits or gathering shared weights by the arc. Only the
benchmark (`src.bench`) uses it, as the floor the gated search step is
compared with; each distinct arc needs its own trace.
"""


class BakedArc:
    """An arc fixed at trace time: `values`, a tuple of Python ints in the
    search space's flat encoding."""

    def __init__(self, values):
        self.values = tuple(int(v) for v in values)
