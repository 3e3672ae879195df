"""The corrected PTB language model's child network (enas_lm's fixed model,
`fixed_lib.LM`).

A word-level language model with one recurrent cell (`src.enas_lm.arcs`)
and a softmax tied to the embedding (logits = outputs @ W_emb^T, no bias, no
projection: the hidden size is the embedding size).

One time step (x_t the word's embedding, s the previous state):
- node 0: [x_t * m_x, s * m_l] @ w_prev -> (h, t); node 0 = s + sigmoid(t)
  (tanh(h) - s);
- node k >= 1, reading node p: (p * m_l) @ w_k -> (h, t); node k = p +
  sigmoid(t) (f_k(h) - p), f_k one of ENAS_LM_FUNCS;
- output and next state: the mean of nodes 1..K (or of the loose ends with
  `average_loose_ends`).

Regularisation in training (rates are drop rates; masks floor(u + keep) /
keep, resampled every call): rows of the embedding for the input lookup
(drop_e; the softmax uses the whole embedding), the embedded window with
one mask per row shared over time (drop_i, [N, 1, H]), the cell's input
(drop_x, m_x [N, H]) and every matmul input of the state and the nodes
(drop_l, m_l [N, H], one mask for all of them), the outputs (drop_o,
[N, 1, H]), and the weights (drop_w: the state half of w_prev and every
w_k).

Variable paths are enas_lm's: `language_model/embedding/w` [V, H],
`language_model/rnn_cell/w_prev` [2H, 2H], `language_model/rnn_cell/
layer_{k-1}/w` [H, 2H] for node k, and the carried states
`language_model/init_states/batch/s` [batch, H] (training and validation)
and `language_model/init_states/test/s` [1, H] (test).

Shapes are batch-major: tokens [N, T] int32, state [N, H] float32. T may
differ between calls (one traced tf.while_loop over the steps).
"""

import dataclasses

import keras
import tensorflow as tf

from src.controller import WeightScope, seed_stream
from src.enas_lm.arcs import ENAS_LM_FUNCS, EnasLmArc
from src.errors import UserError

__all__ = ["EnasLmChildConfig", "EnasLmFixedChild", "drop_mask",
           "apply_function", "cell_step"]


@dataclasses.dataclass
class EnasLmChildConfig:
    """Sizes and regularisation of an enas_lm child (what `fixed_lib`
    reads from its hparams). `fixed_arc` is an EnasLmArc."""
    fixed_arc: EnasLmArc = None
    vocab_size: int = 10000
    hidden_size: int = 800
    batch_size: int = 64
    bptt_steps: int = 35
    init_range: float = 0.05
    drop_e: float = 0.125
    drop_i: float = 0.175
    drop_l: float = 0.225
    drop_o: float = 0.75
    drop_w: float = 0.0
    drop_x: float = 0.725
    seed: int = None

    def validate(self):
        for name, value in (("--child_vocab_size", self.vocab_size),
                            ("--child_hidden_size", self.hidden_size),
                            ("--child_batch_size", self.batch_size),
                            ("--child_bptt_steps", self.bptt_steps)):
            if value < 1:
                raise UserError("{} must be at least 1, got {}".format(
                    name, value))
        for name in ("drop_e", "drop_i", "drop_l", "drop_o", "drop_w",
                     "drop_x"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UserError("--child_{}={} is not a drop rate in [0, 1)"
                                .format(name, value))
        if self.init_range <= 0:
            raise UserError("--child_init_range must be positive, got {}"
                            .format(self.init_range))
        if self.fixed_arc is not None and not isinstance(self.fixed_arc,
                                                         EnasLmArc):
            raise UserError("the fixed arc must be an EnasLmArc (parse it "
                            "with EnasLmArc.parse)")

    @property
    def num_layers(self):
        return self.fixed_arc.num_layers


# ------------------------------------------------------------- pieces

def drop_mask(shape, rate, seed):
    """floor(u + keep) / keep with keep = 1 - rate, u uniform in [0, 1);
    None when rate is 0 (nothing is dropped). seed: a keras SeedGenerator."""
    if rate == 0:
        return None
    keep = 1.0 - rate
    u = keras.random.uniform(shape, seed=seed)
    return tf.floor(u + keep) / keep


def _times(x, mask):
    return x if mask is None else x * mask


def apply_function(func, h):
    """ENAS_LM_FUNCS[func](h); func a Python int or an int32 scalar tensor
    (then a `tf.switch_case`: only the chosen function runs)."""
    branches = (tf.tanh, tf.nn.relu, tf.sigmoid, tf.identity)
    if isinstance(func, int):
        return branches[func](h)
    out = tf.switch_case(func, [(lambda f=f: f(h)) for f in branches])
    out.set_shape(h.shape)
    return out


def highway(inp, ht, func):
    """inp + sigmoid(t) (f(h) - inp), (h, t) the halves of ht [N, 2H]."""
    h, t = tf.split(ht, 2, axis=1)
    return inp + tf.sigmoid(t) * (apply_function(func, h) - inp)


def cell_step(x_part, s, w_state, w_nodes, arc, layer_mask):
    """One step of a fixed cell: (the output, i.e. the next state [N, H]).

    x_part: [N, 2H] the input's share of node 0's pre-activation ((x_t *
      m_x) @ w_prev[:H]); s [N, H] the previous state; w_state: w_prev[H:]
      [H, 2H]; w_nodes: node k's weight at k - 1; arc: an EnasLmArc;
      layer_mask: m_l [N, H] or None.
    """
    nodes = [highway(s, x_part + tf.matmul(_times(s, layer_mask), w_state),
                     0)]
    for k in range(1, arc.num_layers + 1):
        inp = nodes[arc.prevs[k - 1]]
        ht = tf.matmul(_times(inp, layer_mask), w_nodes[k - 1])
        nodes.append(highway(inp, ht, arc.funcs[k - 1]))
    chosen = [nodes[k] for k in arc.averaged()]
    return tf.add_n(chosen) / float(len(chosen))


# ------------------------------------------------------------- the child

class EnasLmFixedChild(keras.layers.Layer):
    """enas_lm's fixed model: `child(tokens, state, training=False)` ->
    (outputs [N, T, H] before the output dropout, next_state [N, H]);
    `token_nll(x, y, state, training)` -> (nll [N, T], outputs, next_state).
    """

    def __init__(self, cfg, name="language_model", **kwargs):
        super().__init__(name=name, **kwargs)
        cfg.validate()
        if cfg.fixed_arc is None:
            raise UserError("the fixed model needs --fixed_arc")
        self.cfg = cfg
        h, r = cfg.hidden_size, cfg.init_range
        seeds = seed_stream(cfg.seed, cfg.num_layers + 2)

        def init():
            return keras.initializers.RandomUniform(
                -r, r, seed=None if seeds is None else next(seeds))

        self.embedding = WeightScope(
            "embedding", weights=[("w", (cfg.vocab_size, h), init())])
        self.rnn_cell = WeightScope(
            "rnn_cell", weights=[("w_prev", (2 * h, 2 * h), init())],
            children=[WeightScope("layer_{}".format(k),
                                  weights=[("w", (h, 2 * h), init())])
                      for k in range(cfg.num_layers)])
        zeros = keras.initializers.Zeros()
        self.init_states = WeightScope("init_states", children=[
            WeightScope("batch", weights=[("s", (cfg.batch_size, h),
                                           zeros)]),
            WeightScope("test", weights=[("s", (1, h), zeros)])])
        self.build()

    def build(self, input_shape=None):
        self.embedding.build()
        self.rnn_cell.build()
        self.init_states.build()
        for scope in self.init_states.children:
            scope.s.trainable = False
        self.dropout_seed = keras.random.SeedGenerator(self.cfg.seed,
                                                       name="dropout")
        self.built = True

    # -- weights by role

    @property
    def w_emb(self):
        return self.embedding.w

    @property
    def w_prev(self):
        return self.rnn_cell.w_prev

    @property
    def w_nodes(self):
        """Node k's weight at k - 1 (`rnn_cell/layer_{k-1}/w`)."""
        return [scope.w for scope in self.rnn_cell.children]

    def optimizer_variables(self):
        """The trainable weights in enas_lm's order: embedding, w_prev,
        layer_0 .. layer_{K-1}."""
        return [self.w_emb, self.w_prev] + self.w_nodes

    @property
    def batch_state(self):
        """The carried state of training and validation [batch, H]."""
        return self.init_states.children[0].s

    @property
    def test_state(self):
        """The carried state of the test pass [1, H]."""
        return self.init_states.children[1].s

    # -- the forward pass

    def call(self, tokens, state, training=False):
        cfg = self.cfg
        h = cfg.hidden_size
        n = tf.shape(tokens)[0]
        seed = self.dropout_seed
        w_emb, w_prev, w_nodes = self.w_emb, self.w_prev, self.w_nodes
        input_mask = layer_mask = None
        if training:
            row_mask = drop_mask([cfg.vocab_size, 1], cfg.drop_e, seed)
            if row_mask is not None:
                w_emb = w_emb * row_mask
            w_mask = [drop_mask([h, 2 * h], cfg.drop_w, seed)
                      for _ in range(cfg.num_layers + 1)]
            if w_mask[0] is not None:
                w_prev = tf.concat([w_prev[:h], w_prev[h:] * w_mask[0]], 0)
                w_nodes = [w * m for w, m in zip(w_nodes, w_mask[1:])]
        emb = tf.nn.embedding_lookup(w_emb, tokens)
        if training:
            emb = _times(emb, drop_mask([n, 1, h], cfg.drop_i, seed))
            input_mask = drop_mask([n, h], cfg.drop_x, seed)
            layer_mask = drop_mask([n, h], cfg.drop_l, seed)
        # The input's share of node 0 for every step at once.
        x_parts = tf.einsum("nth,hk->tnk", _times(
            emb, None if input_mask is None else input_mask[:, None]),
            w_prev[:h])
        w_state = w_prev[h:]
        steps = tf.shape(tokens)[1]
        arc = cfg.fixed_arc

        def body(t, s, outputs):
            s = cell_step(x_parts[t], s, w_state, w_nodes, arc, layer_mask)
            return t + 1, s, outputs.write(t, s)

        outputs = tf.TensorArray(tf.float32, size=steps,
                                 element_shape=[None, h])
        _, next_state, outputs = tf.while_loop(
            lambda t, *_: t < steps, body,
            (tf.constant(0), tf.convert_to_tensor(state, tf.float32),
             outputs))
        return tf.transpose(outputs.stack(), [1, 0, 2]), next_state

    def token_nll(self, x, y, state, training=False):
        """(per-token NLL [N, T], outputs [N, T, H] before the output
        dropout, next state [N, H]) of the window x -> y from `state`."""
        outputs, next_state = self(x, state, training=training)
        top = outputs
        if training:
            top = _times(outputs, drop_mask(
                [tf.shape(x)[0], 1, self.cfg.hidden_size], self.cfg.drop_o,
                self.dropout_seed))
        logits = tf.einsum("nth,vh->ntv", top, self.w_emb)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                             logits=logits)
        return nll, outputs, next_state
