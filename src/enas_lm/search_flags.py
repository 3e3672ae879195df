"""The absl flags of `python -m src.enas_lm.search`.

enas_lm's `search.py`, `child.py` and `controller.py` flags with their
names and defaults; what `child._set_default_params` hard-codes is a flag
`--child_<name>` with that value as default, and what
`controller._set_default_params` hard-codes a flag `--controller_<name>`
(the number of functions stays 4: the child has four). Flags marked
"(port)" are this port's additions.
"""

from src import flag_defs
from src.enas_lm.fixed_flags import define_child_flags, define_port_flags


def define_flags(flag_values):
    """Defines the entry point's flags into `flag_values` (a fresh
    `flags.FlagValues`)."""
    d = flag_defs.definer(flag_values)
    d("boolean", "reset_output_dir", False, "")
    d("string", "output_dir", None, "")
    d("string", "data_path", None, "")
    d("integer", "log_every", 200, "")

    d("integer", "child_batch_size", 128, "")
    d("float", "child_alpha", 0.0, "(hard-coded in enas_lm) activation L2 "
      "reg")
    d("float", "child_beta", 1.0, "(hard-coded in enas_lm) activation "
      "slowness reg")
    define_child_flags(d, 200, (0.10, 0.20, 0.25, 0.75, 0.0, 0.75),
                       init_range=0.04, grad_bound=0.1, warmup=False)
    d("integer", "child_num_train_epochs", 600, "(hard-coded in enas_lm)")

    d("float", "controller_baseline_dec", 0.999, "")
    d("float", "controller_entropy_weight", 1e-5, "")
    d("float", "controller_temperature", 5.0, "")
    d("float", "controller_tanh_constant", 2.25, "")
    d("float", "controller_learning_rate", 5e-5, "")
    d("integer", "controller_num_layers", 9, "")
    d("integer", "controller_hidden_size", 64, "(hard-coded in enas_lm)")
    d("integer", "controller_num_aggregate", 10,
      "(hard-coded in enas_lm) Gradients averaged into one Adam update.")
    d("integer", "controller_num_train_steps", 25,
      "(hard-coded in enas_lm) Updates per controller training: each "
      "training runs num_aggregate * num_train_steps samples.")
    define_port_flags(d, 1234)
    d("enum", "search_policy", "enas",
      "(port) Who picks the cells: enas (the controller, trained by "
      "REINFORCE, as enas_lm) or random (random search with weight sharing: "
      "every node's previous node and function drawn uniformly; the child "
      "trains and validates as in an ENAS search, no controller training). "
      "Not with --reference_checkpoint.", enum_values=["enas", "random"])
