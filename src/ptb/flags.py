"""The absl flags of `python -m src.ptb.main`.

Every flag of the reference's `src/ptb/main.py`, with its name and default;
the ones it defines but never reads are marked "(unused, as in the
reference)". Flags marked "(port)" are this port's additions.
"""

from src import flag_defs


def define_flags(flag_values):
    """Defines the entry point's flags into `flag_values` (a fresh
    `flags.FlagValues`)."""
    d = flag_defs.definer(flag_values)
    d("boolean", "reset_output_dir", False, "Delete output_dir if exists.")
    d("string", "data_path", "", "The reference's ptb.pkl, or a folder with "
      "it or with the text files train/valid/test (or ptb.train.txt, ...); "
      "downloaded there when missing.")
    d("string", "output_dir", "", "Checkpoints, logs, flags of the run.")
    d("string", "search_for", None, "Must be enas ([rhn|base|enas] in the "
      "reference, which implements only enas)")

    d("string", "child_fixed_arc", None, "")
    d("integer", "batch_size", 25, "")
    d("integer", "child_base_number", 4, "(unused, as in the reference)")
    d("integer", "child_num_layers", 2, "")
    d("integer", "child_bptt_steps", 20, "")
    d("integer", "child_lstm_hidden_size", 200, "")
    d("float", "child_lstm_e_keep", 1.0, "")
    d("float", "child_lstm_x_keep", 1.0, "")
    d("float", "child_lstm_h_keep", 1.0, "")
    d("float", "child_lstm_o_keep", 1.0, "")
    d("boolean", "child_lstm_l_skip", False, "")
    d("float", "child_lr", 1.0, "")
    d("float", "child_lr_dec_rate", 0.5, "")
    d("float", "child_grad_bound", 5.0, "")
    d("float", "child_temperature", None, "(unused, as in the reference)")
    d("float", "child_l2_reg", None, "")
    d("float", "child_lr_dec_min", None, "")
    d("float", "child_optim_moving_average", None,
      "Use the moving average of Variables")
    d("float", "child_rnn_l2_reg", None, "")
    d("float", "child_rnn_slowness_reg", None, "")
    d("float", "child_lr_warmup_val", None, "")
    d("float", "child_reset_train_states", None, "")
    d("integer", "child_lr_dec_start", 4, "")
    d("integer", "child_lr_dec_every", 1, "")
    d("integer", "child_avg_pool_size", 1, "(unused, as in the reference)")
    d("integer", "child_block_size", 1, "")
    d("integer", "child_rhn_depth", 4, "")
    d("integer", "child_lr_warmup_steps", None, "")
    d("string", "child_optim_algo", "sgd", "(the reference always uses sgd)")

    d("boolean", "child_sync_replicas", False, "")
    d("integer", "child_num_aggregate", 1, "")
    d("integer", "child_num_replicas", 1, "")

    d("float", "controller_lr", 1e-3, "")
    d("float", "controller_lr_dec_rate", 1.0, "(unused, as in the reference)")
    d("float", "controller_keep_prob", 0.5, "(unused, as in the reference)")
    d("float", "controller_l2_reg", 0.0, "")
    d("float", "controller_bl_dec", 0.99, "")
    d("float", "controller_tanh_constant", None, "")
    d("float", "controller_temperature", None, "")
    d("float", "controller_entropy_weight", None, "")
    d("float", "controller_skip_target", None, "(unused, as in the reference)")
    d("float", "controller_skip_rate", None, "(unused, as in the reference)")

    d("integer", "controller_num_aggregate", 1, "")
    d("integer", "controller_num_replicas", 1, "")
    d("integer", "controller_train_steps", 50, "")
    d("integer", "controller_train_every", 2,
      "train the controller after how many this number of epochs")
    d("boolean", "controller_sync_replicas", False, "To sync or not to sync.")
    d("boolean", "controller_training", True, "")

    d("integer", "num_epochs", 300, "")

    d("integer", "log_every", 50, "How many steps to log")
    d("integer", "eval_every_epochs", 1, "How many epochs to eval")

    # The reference's scripts pass these flags, which its entry point never
    # defines (TF1 ignored unknown flags; absl rejects them).
    d("boolean", "child_lstm_e_skip", False,
      "(unused: passed by the reference's PTB scripts, never defined or "
      "read by its entry point)")
    d("integer", "controller_selection_threshold", None,
      "(unused: passed by the reference's ptb_final.sh, never defined or "
      "read by its entry point)")

    # Port additions.
    d("integer", "controller_num_funcs", 2,
      "(port) Activations the controller chooses from: the first N of tanh, "
      "relu, identity, sigmoid. The reference's controller samples only 2 "
      "of the child's 4 (its default, never overridden); 4 searches them "
      "all.")
    d("boolean", "train_on_valid", False,
      "(port) Development layout for a copy of PTB without its training "
      "split (../shared/data/ptb): train on the valid text, validate and "
      "test on the test text, vocabulary of valid + test (the layout of the "
      "reference's recorded goldens). Its perplexities are not PTB results.")
    d("integer", "seed", 1234,
      "(port) Seed of the weights, dropout masks, reward windows and "
      "controller samples.")
    d("boolean", "download", True,
      "(port) Download the PTB text into --data_path when it is not there.")

    flag_defs.define_shared_port_flags(d)
