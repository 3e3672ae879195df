"""Names of our variables in the reference's TF1 checkpoints.

Our variable paths are the reference's variable names except for the batch
norm's zero-debiasing state, which TF1 keeps under a doubled scope
(`<scope>/bn/<scope>/bn/moving_mean/biased`) and Keras cannot name with
slashes (`<scope>/bn/moving_mean_biased`).
"""

import re

import tensorflow as tf

from src.errors import UserError

_DEBIAS = re.compile(
    r"^(?P<scope>.*/(?:bn|batch_norm))/(?P<stat>moving_mean|moving_variance)_"
    r"(?P<part>biased|local_step)$")


def reference_name(path):
    """The reference's checkpoint name of the variable at `path`."""
    m = _DEBIAS.match(path)
    if m:
        return "{0}/{0}/{1}/{2}".format(m["scope"], m["stat"], m["part"])
    return path


def load_reference_weights(variables, checkpoint_path):
    """Assigns each variable its value in a reference TF1 checkpoint.

    Every variable must be present with the same shape; a UserError lists
    the ones missing or mismatched.
    """
    reader = tf.train.load_checkpoint(checkpoint_path)
    shapes = reader.get_variable_to_shape_map()
    problems = []
    for v in variables:
        name = reference_name(v.path)
        if name not in shapes:
            problems.append("missing {}".format(name))
        elif tuple(shapes[name]) != tuple(v.shape):
            problems.append("{} has shape {} here, {} in the checkpoint"
                            .format(name, tuple(v.shape), tuple(shapes[name])))
    if problems:
        raise UserError("the reference checkpoint {} does not fit this model: "
                        "{}".format(checkpoint_path, "; ".join(problems[:10])))
    for v in variables:
        v.assign(reader.get_tensor(reference_name(v.path)))
