"""The macro search space: whole networks, one op and the skip connections
per layer (`space.SPACE`; arcs in `arcs`)."""
