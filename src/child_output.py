"""What a CIFAR-10 child returns: `ChildOutput(logits, aux_logits)`.

Every CIFAR-10 child's `call` returns one (`FixedMacroChild`,
`SearchMacroChild`, `FixedMicroChild`, `SearchMicroChild`): `aux_logits`
is the micro child's aux head in training (with `use_aux_heads`), None
otherwise. It is a NamedTuple, so `out[0]` and `logits, aux_logits = out`
work too.
"""

import typing

import tensorflow as tf


class ChildOutput(typing.NamedTuple):
    """logits [N, 10]; aux_logits [N, 10] or None."""
    logits: tf.Tensor
    aux_logits: typing.Optional[tf.Tensor] = None
