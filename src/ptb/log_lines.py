"""The reference's PTB log lines: the child's training line, the
controller's line (with `rw=`), and `eval_once`'s printout."""


def train_line(epoch, step, loss, lr, grad_norm, train_ppl, minutes):
    """The reference's PTB child log line."""
    return ("epoch={:<6d}".format(epoch)
            + " ch_step={:<6d}".format(step)
            + " loss={:<8.4f}".format(loss)
            + " lr={:<8.4f}".format(lr)
            + " |g|={:<10.2f}".format(grad_norm)
            + " tr_ppl={:<8.2f}".format(train_ppl)
            + " mins={:<10.2f}".format(minutes))


def print_evaluation(name, step, result, verbose):
    """The reference's `eval_once` printout for a finished evaluation.

    result: the trainer's evaluation dict (total_loss, log_ppl, ppl, and
    `progress`: (windows done, perplexity so far) every 1000 windows).
    """
    print("Eval at {}".format(step))
    if verbose:
        for done, ppl_so_far in result.get("progress", ()):
            print("{:<5d} {:<6.2f}".format(done, ppl_so_far))
        print("")
    print("{}_total_loss: {:<6.2f}".format(name, result["total_loss"]))
    print("{}_log_ppl: {:<6.2f}".format(name, result["log_ppl"]))
    print("{}_ppl: {:<6.2f}".format(name, result["ppl"]))


def controller_line(step, loss, entropy, lr, grad_norm, reward, baseline,
                    minutes):
    """The reference's PTB controller log line."""
    return ("ctrl_step={:<6d}".format(step)
            + " loss={:<7.3f}".format(loss)
            + " ent={:<5.2f}".format(entropy)
            + " lr={:<6.4f}".format(lr)
            + " |g|={:<10.7f}".format(grad_norm)
            + " rw={:<7.3f}".format(reward)
            + " bl={:<7.3f}".format(baseline)
            + " mins={:<.2f}".format(minutes))
