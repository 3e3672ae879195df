"""enas_lm's log lines: the fixed model's, the search child's and the
controller's, as its `fixed.py`, `search.py` and `controller.py` print
them (`src.logs` reads them)."""

from src.enas_lm.controller import REWARD_CONSTANT


def train_line(epoch, step, ppl, lr, grad_norm, averaging, minutes):
    """enas_lm's fixed-model log line."""
    return ("epoch={0:<5d}".format(epoch)
            + " step={0:<7d}".format(step)
            + " ppl={0:<10.2f}".format(ppl)
            + " lr={0:<6.3f}".format(lr)
            + " |g|={0:<6.3f}".format(grad_norm)
            + " avg={0:<2d}".format(averaging)
            + " mins={0:<.2f}".format(minutes))


def search_line(epoch, step, ppl, lr, l2_reg, grad_norm, minutes):
    """enas_lm's search log line (|w| the decay term before its weight)."""
    return ("epoch={0:<5d}".format(epoch)
            + " step={0:<7d}".format(step)
            + " ppl={0:<9.2f}".format(ppl)
            + " lr={0:<7.2f}".format(lr)
            + " |w|={0:<6.2f}".format(l2_reg)
            + " |g|={0:<6.2f}".format(grad_norm)
            + " mins={0:<.2f}".format(minutes))


def controller_line(step, out):
    """enas_lm's controller log line (ppl = 80 / reward, the entropy bonus
    included)."""
    return ("step={0:<5d}".format(step)
            + " ent={0:<7.3f}".format(float(out["entropy"]))
            + " ppl={0:<7.2f}".format(REWARD_CONSTANT / float(out["reward"]))
            + " rw={0:<7.4f}".format(float(out["reward"]))
            + " bl={0:<7.4f}".format(float(out["baseline"]))
            + " arc=[{0}]".format(" ".join(str(int(v))
                                           for v in out["arc"])))
