"""The absl flags of `python -m src.enas_lm.fixed`.

enas_lm's `fixed.py` and `fixed_lib.py` flags with their names and
defaults; what `fixed_lib._set_default_params` hard-codes is a flag
`--child_<name>` with that value as default; `--child_average_loose_ends`
is the flag of enas_lm's TPU code (default here: off, as the GPU code that
`fixed.py` runs). Flags marked "(port)" are this port's additions.
"""

from src import flag_defs


def define_child_flags(d, hidden_size, drops, init_range=0.05,
                       grad_bound=0.25, warmup=True):
    """The child flags both enas_lm entry points define (`drops`: the
    default drop rates e, i, l, o, w, x)."""
    for name, default in zip("eilowx", drops):
        d("float", "child_drop_" + name, default, "Drop rate ({}).".format(
            {"e": "rows of the embedding", "i": "embeddings",
             "l": "between the cell's nodes", "o": "outputs",
             "w": "weights", "x": "input of the cell"}[name]))
    d("float", "child_init_range", init_range, "")
    d("float", "child_grad_bound", grad_bound, "")
    d("float", "child_weight_decay", 8e-7, "")
    d("integer", "child_hidden_size", hidden_size, "")
    d("integer", "child_bptt_steps", 35,
      "(hard-coded in enas_lm) BPTT length the window lengths centre on.")
    d("float", "child_learning_rate", 20.0, "(hard-coded in enas_lm)")
    if warmup:
        d("float", "child_num_warmup_epochs", 0.0, "(hard-coded in enas_lm)")
    d("integer", "child_vocab_size", 10000,
      "(hard-coded in enas_lm) Rows of the embedding and the softmax; at "
      "least the data's vocabulary.")
    d("boolean", "child_average_loose_ends", False,
      "The cell's output is the mean of its loose ends (enas_lm's TPU "
      "code, where it defaults to true) instead of every node after node 0 "
      "(its GPU code, which fixed.py and search.py run).")


def define_port_flags(d, seed):
    d("integer", "seed", seed,
      "(port) Seed of the weights, dropout masks and window lengths "
      "(enas_lm sets a graph seed of {} and no other).".format(seed))
    d("boolean", "train_on_valid", False,
      "(port) Development layout for a copy of PTB without its training "
      "split: train on the valid text, validate and test on the test text, "
      "vocabulary of valid + test. Its perplexities are not PTB results.")
    d("boolean", "download", True,
      "(port) Download the PTB text into --data_path when it is not there.")
    d("string", "reference_checkpoint", None,
      "(port) Initialise from a TF1 checkpoint written by enas_lm; ignored "
      "when --output_dir already holds a checkpoint of this run.")
    d("boolean", "deterministic", False,
      "(port) Deterministic TensorFlow ops: the same --seed gives the same "
      "numbers run after run.")
    d("enum", "jit_compile", "auto",
      "(port) XLA for the child's training step: auto (off: XLA compiles "
      "once per window length, about 40 lengths at 3-4 s each; it then runs "
      "the fixed CPU-size step in 0.040 s instead of 0.057 s), true, false.",
      enum_values=["auto", "true", "false"])
    d("enum", "nan_policy", "stop",
      "(port) On a NaN or Inf loss or gradient norm: stop (naming the step "
      "and the last good checkpoint) or skip_arc (drop that update, log it "
      "and go on).", enum_values=["stop", "skip_arc"])


def define_flags(flag_values):
    """Defines the entry point's flags into `flag_values` (a fresh
    `flags.FlagValues`)."""
    d = flag_defs.definer(flag_values)
    d("boolean", "reset_output_dir", True, "")
    d("string", "output_dir", None, "")
    d("string", "data_path", None, "")
    d("integer", "log_every", 200, "")

    d("string", "fixed_arc", None, "")
    d("float", "child_alpha", 0.7, "activation L2 reg")
    define_child_flags(d, 800, (0.125, 0.175, 0.225, 0.75, 0.0, 0.725))
    d("integer", "child_num_train_epochs", 3000, "")
    d("integer", "child_batch_size", 64, "(hard-coded in enas_lm)")
    d("integer", "child_best_valid_ppl_threshold", 10,
      "(hard-coded in enas_lm) Averaging starts when the validation "
      "perplexity is worse than the best of all but the last this many.")
    define_port_flags(d, 2126)
