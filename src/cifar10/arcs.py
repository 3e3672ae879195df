"""Transitional: the CIFAR-10 arc classes now live in `src.macro.arcs` and
`src.micro.arcs`."""

from src.macro.arcs import *  # noqa: F401,F403
from src.macro.arcs import MACRO_OPS, MacroArc, macro_arc_length, pool_layers  # noqa: F401
from src.micro.arcs import *  # noqa: F401,F403
from src.micro.arcs import MICRO_CELLS, MICRO_OPS, MicroArc, micro_arc_length  # noqa: F401
