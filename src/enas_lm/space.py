"""The corrected PTB language model's `SPACE` (enas_lm): the arc class, its
printout and `arcs.jsonl` fields. The entry points `src.enas_lm.fixed` and
`src.enas_lm.search` run it.
"""

import numpy as np

from src.enas_lm import arcs
from src.space import SearchSpace


class EnasLmSpace(SearchSpace):
    name = "enas_lm"
    entry = "enas_lm_search"
    search_for = "enas_lm"
    model_name = "language_model"
    arc_class = arcs.EnasLmArc

    def parse_arc(self, values, child_cfg):
        return arcs.EnasLmArc.parse(
            values, child_cfg.num_layers,
            getattr(child_cfg, "average_loose_ends", False))

    def printout(self, arc, score):
        return ["{} rw={:<.3f}".format(np.array(arc.to_list()), score)]

    def arc_record(self, arc):
        return {"enas_lm_cell": arc.describe()}


SPACE = EnasLmSpace()
