"""The absl flags of `python -m src.cifar10.main`.

Every flag of the reference's `src/cifar10/main.py`, with its name and
default; the ones the reference defines but never reads are marked
"(unused, as in the reference)". Flags marked "(port)" are this port's
additions.
"""

from src import flag_defs


def define_flags(flag_values):
    """Defines the entry point's flags into `flag_values` (a fresh
    `flags.FlagValues`)."""
    d = flag_defs.definer(flag_values)
    d("boolean", "reset_output_dir", False, "Delete output_dir if exists.")
    d("string", "data_path", "", "Folder with the CIFAR-10 python batches "
      "(downloaded there when missing).")
    d("string", "output_dir", "", "Checkpoints, logs, flags of the run.")
    d("string", "data_format", "NHWC", "'NHWC' or 'NCHW' (NCHW needs a GPU; "
      "without one it runs as NHWC).")
    d("string", "search_for", None, "Must be [macro|micro]")

    d("integer", "batch_size", 32, "")

    d("integer", "num_epochs", 300, "")
    d("integer", "child_lr_dec_every", 100, "Epochs between decays.")
    d("integer", "child_num_layers", 5, "")
    d("integer", "child_num_cells", 5, "")
    d("integer", "child_filter_size", 5,
      "(unused, as in the reference)")
    d("integer", "child_out_filters", 48, "")
    d("integer", "child_out_filters_scale", 1, "")
    d("integer", "child_num_branches", 4, "")
    d("integer", "child_num_aggregate", None, "")
    d("integer", "child_num_replicas", 1, "")
    d("integer", "child_block_size", 3, "(unused, as in the reference)")
    d("integer", "child_lr_T_0", None, "for lr schedule")
    d("integer", "child_lr_T_mul", None, "for lr schedule")
    d("integer", "child_cutout_size", None, "CutOut size")
    d("float", "child_grad_bound", 5.0, "Gradient clipping")
    d("float", "child_lr", 0.1, "")
    d("float", "child_lr_dec_rate", 0.1, "")
    d("float", "child_keep_prob", 0.5, "")
    d("float", "child_drop_path_keep_prob", 1.0,
      "minimum drop_path_keep_prob")
    d("float", "child_l2_reg", 1e-4, "")
    d("float", "child_lr_max", None, "for lr schedule")
    d("float", "child_lr_min", None, "for lr schedule")
    d("string", "child_skip_pattern", None,
      "Must be ['dense', None] (unused, as in the reference)")
    d("string", "child_fixed_arc", None, "")
    d("boolean", "child_use_aux_heads", False, "Should we use an aux head")
    d("boolean", "child_sync_replicas", False, "To sync or not to sync.")
    d("boolean", "child_lr_cosine", False, "Use cosine lr schedule")

    d("float", "controller_lr", 1e-3, "")
    d("float", "controller_lr_dec_rate", 1.0, "")
    d("float", "controller_keep_prob", 0.5, "")
    d("float", "controller_l2_reg", 0.0, "")
    d("float", "controller_bl_dec", 0.99, "")
    d("float", "controller_tanh_constant", None, "")
    d("float", "controller_op_tanh_reduce", 1.0, "")
    d("float", "controller_temperature", None, "")
    d("float", "controller_entropy_weight", None, "")
    d("float", "controller_skip_target", 0.8, "")
    d("float", "controller_skip_weight", 0.0, "")
    d("integer", "controller_num_aggregate", 1, "")
    d("integer", "controller_num_replicas", 1, "")
    d("integer", "controller_train_steps", 50, "")
    d("integer", "controller_forwards_limit", 2,
      "(unused, as in the reference)")
    d("integer", "controller_train_every", 2,
      "train the controller after this number of epochs")
    d("boolean", "controller_search_whole_channels", False, "")
    d("boolean", "controller_sync_replicas", False, "To sync or not to sync.")
    d("boolean", "controller_training", True, "")
    d("boolean", "controller_use_critic", False,
      "(unused, as in the reference)")

    d("integer", "log_every", 50, "How many steps to log")
    d("integer", "eval_every_epochs", 1, "How many epochs to eval")

    # The reference's scripts pass this flag, which its entry point never
    # defines (TF1 ignored unknown flags; absl rejects them).
    d("integer", "child_num_cell_layers", 5,
      "(unused: passed by the reference's macro scripts, never defined "
      "or read by its entry point)")

    # Port additions.
    d("integer", "num_valids", None,
      "(port) Training images held out for validation, taken from the end "
      "of the training batches. Default: the reference's (5000 when "
      "searching, 0 with --child_fixed_arc).")
    d("integer", "seed", 1234,
      "(port) Seed of the weights, data order, augmentation and dropout.")
    d("boolean", "child_fixed_separable", False,
      "(port) Build ops 1 and 3 of a fixed macro arc as separable "
      "convolutions; the reference builds them as ordinary convolutions, "
      "which is how its published macro result was trained.")
    d("boolean", "child_search_eval_training_mode", True,
      "(port) Micro search: run the valid, test and reward passes in "
      "training mode (batch statistics, dropout), as the reference does; "
      "--nochild_search_eval_training_mode evaluates with the moving "
      "statistics and no dropout.")
    d("boolean", "child_train_aux_head", False,
      "(port) Also train the micro aux head's own weights. The reference "
      "leaves them out of its optimiser (they keep their initial values; the "
      "aux loss still trains the body).")
    d("boolean", "download", True,
      "(port) Download CIFAR-10 into --data_path when it is not there.")

    flag_defs.define_shared_port_flags(d)
