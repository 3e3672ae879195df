"""The micro search space: a normal and a reduction cell stacked into a
network (`space.SPACE`; arcs in `arcs`)."""
