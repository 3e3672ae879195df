"""enas_lm's training windows of random length (`data_utils.input_producer`
with `random_len=True`). Pure numpy.

The training stream is cut into B rows of batch_len = N // B words. From
position `start`, a window's length is
  base = bptt with probability 0.95, else bptt / 2;
  L = int(truncated normal(base, 5))   (redrawn beyond 2 standard
                                         deviations, truncated toward 0);
  L = min(L, bptt + 20, batch_len - start - 1), and at least 1 (the
      port's: below bptt 22 enas_lm can draw L <= 0, an empty window with
      a NaN loss);
x = rows[:, start:start + L], y = rows[:, start + 1:start + L + 1];
start += L; the epoch ends (`should_reset`) when start + L >= batch_len - 3
(the stream then starts again at 0).

The draws of a window come from a numpy generator seeded by (seed, global
step), so a resumed run draws the same lengths.
"""

import numpy as np

from src.errors import UserError
from src.ptb.data import batch_rows


def window_length(rng, bptt_steps):
    """One draw of enas_lm's window length (before the caps)."""
    base = bptt_steps if rng.uniform() < 0.95 else bptt_steps / 2.0
    while True:
        z = rng.standard_normal()
        if abs(z) <= 2.0:
            break
    return int(np.float32(base + 5.0 * z))


class RandomLengthStream:
    """The training windows of one stream. position: the row index the next
    window starts at (enas_lm's `start_idx`)."""

    def __init__(self, stream, batch_size, bptt_steps, seed, position=0):
        self.rows = batch_rows(stream, batch_size)
        self.batch_len = self.rows.shape[1]
        if self.batch_len < 5:
            raise UserError(
                "the train split has {} words, too few for batch size {}: "
                "each of its rows needs at least 5 words".format(
                    np.size(stream), batch_size))
        self.bptt_steps = bptt_steps
        self.seed = seed
        self.position = position

    def next(self, step):
        """(x, y, should_reset) of the window drawn at global step `step`;
        moves the position (back to 0 after the epoch's last window)."""
        rng = np.random.default_rng([self.seed, step])
        start = self.position
        length = max(min(window_length(rng, self.bptt_steps),
                         self.bptt_steps + 20, self.batch_len - start - 1), 1)
        end = start + length
        x = self.rows[:, start:end]
        y = self.rows[:, start + 1:end + 1]
        should_reset = end >= self.batch_len - 3
        self.position = 0 if should_reset else end
        return x, y, should_reset
