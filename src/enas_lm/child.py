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

from src.common_ops import tied_softmax_nll
from src.controller import WeightScope, seed_stream
from src.determinism import loop_parallel_iterations
from src.enas_lm.arcs import ENAS_LM_FUNCS, EnasLmArc
from src.errors import UserError

__all__ = ["EnasLmChildConfig", "EnasLmFixedChild", "EnasLmSearchChild",
           "drop_mask", "search_step",
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
    # The search child (fixed_arc None): nodes after node 0 and where its
    # output comes from (a fixed arc carries its own).
    search_layers: int = 9
    average_loose_ends: bool = False

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
        if self.fixed_arc is None and self.search_layers < 1:
            raise UserError("--controller_num_layers must be at least 1, got "
                            "{}".format(self.search_layers))
        if self.init_range <= 0:
            raise UserError("--child_init_range must be positive, got {}"
                            .format(self.init_range))
        if self.fixed_arc is not None and not isinstance(self.fixed_arc,
                                                         EnasLmArc):
            raise UserError("the fixed arc must be an EnasLmArc (parse it "
                            "with EnasLmArc.parse)")

    @property
    def num_layers(self):
        if self.fixed_arc is None:
            return self.search_layers
        return self.fixed_arc.num_layers

    @property
    def arc_length(self):
        return 2 * self.num_layers


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

class _TiedLanguageModel(keras.layers.Layer):
    """What both children share: the tied softmax's per-token NLL."""

    # What the export's signatures feed it (src.export).
    serving_inputs = "tokens"

    def state_spec(self):
        """The carried state's TensorSpec (any batch)."""
        return tf.TensorSpec([None, self.cfg.hidden_size], tf.float32,
                             name="state")

    def logits(self, outputs):
        """outputs [N, T, H] @ w_emb^T -> [N, T, V] (tied weights)."""
        return tf.einsum("nth,vh->ntv", outputs, self.w_emb)

    def token_nll(self, x, y, state, arc=None, training=False):
        """(per-token NLL [N, T], outputs [N, T, H] before the output
        dropout, next state [N, H]) of the window x -> y from `state`
        (`arc`: the search child's int32 [2 K] arc; the fixed child ignores
        it)."""
        nll, outputs, next_state, _ = self.token_nll_and_weights(
            x, y, state, arc=arc, training=training)
        return nll, outputs, next_state

    def token_nll_and_weights(self, x, y, state, arc=None, training=False):
        """`token_nll`'s values and the cell weights the pass used (w_prev
        and each node's [H, 2H] weight, after the weight dropout)."""
        outputs, next_state, weights = self.forward(x, state, arc=arc,
                                                    training=training)
        top = outputs
        if training:
            top = _times(outputs, drop_mask(
                [tf.shape(x)[0], 1, self.cfg.hidden_size], self.cfg.drop_o,
                self.dropout_seed))
        nll = tied_softmax_nll(top, self.w_emb, y)
        return nll, outputs, next_state, weights

    def call(self, tokens, state, arc=None, training=False):
        outputs, next_state, _ = self.forward(tokens, state, arc=arc,
                                              training=training)
        return outputs, next_state

    def _inputs(self, tokens, training):
        """(embedded tokens [N, T, H] after the embedding and input
        dropouts, m_x, m_l or None, the drop_w masks or None): the
        training masks of one pass."""
        cfg = self.cfg
        h = cfg.hidden_size
        n = tf.shape(tokens)[0]
        seed = self.dropout_seed
        input_mask = layer_mask = w_masks = row_mask = None
        if training:
            row_mask = drop_mask([cfg.vocab_size, 1], cfg.drop_e, seed)
            if cfg.drop_w > 0:
                w_masks = [drop_mask([h, 2 * h], cfg.drop_w, seed)
                           for _ in range(cfg.num_layers + 1)]
        emb = tf.nn.embedding_lookup(self.w_emb, tokens)
        if row_mask is not None:
            # The rows of (w_emb * row_mask) the window reads: the mask's
            # rows gathered, not the whole masked embedding.
            emb = emb * tf.nn.embedding_lookup(row_mask, tokens)
        if training:
            emb = _times(emb, drop_mask([n, 1, h], cfg.drop_i, seed))
            input_mask = drop_mask([n, h], cfg.drop_x, seed)
            layer_mask = drop_mask([n, h], cfg.drop_l, seed)
        return emb, input_mask, layer_mask, w_masks

    def _run(self, emb, state, input_mask, w_prev, step_fn):
        """The loop over the steps: outputs [N, T, H], last state."""
        h = self.cfg.hidden_size
        x_parts = tf.einsum("nth,hk->tnk", _times(
            emb, None if input_mask is None else input_mask[:, None]),
            w_prev[:h])
        steps = tf.shape(emb)[1]
        # Read per step from a TensorArray: slicing x_parts[t] in the loop
        # makes each step's gradient a StridedSliceGrad of x_parts' whole
        # [T, N, 2H] shape (T of them summed), a TensorArray read's
        # gradient is the one row. The fixed step's peak 815 -> 784 MB, the
        # steps' times the same (the PTB child's loop was 5-9% slower this
        # way, so it slices; BUILD.md, Benchmarks).
        x_parts = tf.TensorArray(tf.float32, size=steps,
                                 element_shape=[None, 2 * h]).unstack(x_parts)

        def body(t, s, outputs):
            s = step_fn(x_parts.read(t), s)
            return t + 1, s, outputs.write(t, s)

        outputs = tf.TensorArray(tf.float32, size=steps,
                                 element_shape=[None, h])
        _, next_state, outputs = tf.while_loop(
            lambda t, *_: t < steps, body,
            (tf.constant(0), tf.convert_to_tensor(state, tf.float32),
             outputs), maximum_iterations=steps,
            parallel_iterations=loop_parallel_iterations())
        return tf.transpose(outputs.stack(), [1, 0, 2]), next_state


class EnasLmFixedChild(_TiedLanguageModel):
    """enas_lm's fixed model: `child(tokens, state, training=False)` ->
    (outputs [N, T, H] before the output dropout, next_state [N, H]);
    `token_nll(x, y, state, training=...)` -> (nll [N, T], outputs,
    next_state).
    """

    searching = False

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

    def forward(self, tokens, state, arc=None, training=False):
        """(outputs [N, T, H], next state, the cell weights used)."""
        del arc  # the cell is cfg.fixed_arc
        h = self.cfg.hidden_size
        emb, input_mask, layer_mask, w_masks = self._inputs(tokens, training)
        w_prev, w_nodes = self.w_prev, self.w_nodes
        if w_masks is not None:
            w_prev = tf.concat([w_prev[:h], w_prev[h:] * w_masks[0]], 0)
            w_nodes = [w * m for w, m in zip(w_nodes, w_masks[1:])]
        w_state = w_prev[h:]
        arc = self.cfg.fixed_arc

        def step(x_part, s):
            return cell_step(x_part, s, w_state, w_nodes, arc, layer_mask)

        outputs, next_state = self._run(emb, state, input_mask, w_prev, step)
        return outputs, next_state, [w_prev] + list(w_nodes)


def search_step(x_part, s, w_state, w_nodes, prevs, funcs, layer_mask,
                out_mask):
    """One step of the search cell, the arc a tensor: like `cell_step`,
    node k reading `tf.gather` of the nodes so far at prevs[k - 1] and its
    function a `tf.switch_case` on funcs[k - 1]; the output the mean of the
    nodes k >= 1 weighted by out_mask [K] (1 for averaged nodes)."""
    nodes = [highway(s, x_part + tf.matmul(_times(s, layer_mask), w_state),
                     0)]
    for k in range(1, len(w_nodes) + 1):
        inp = tf.gather(tf.stack(nodes), prevs[k - 1])
        ht = tf.matmul(_times(inp, layer_mask), w_nodes[k - 1])
        nodes.append(highway(inp, ht, funcs[k - 1]))
    stacked = tf.stack(nodes[1:])                       # [K, N, H]
    return (tf.tensordot(out_mask, stacked, axes=1)
            / tf.reduce_sum(out_mask))


class EnasLmSearchChild(_TiedLanguageModel):
    """enas_lm's shared-weight search child (`child.LM`): every cell of
    `cfg.search_layers` nodes, the arc an int32 tensor [2 K] given at call
    time (one trace serves every arc).

    `child(tokens, state, arc, training=False)` -> (outputs [N, T, H],
    next_state [N, H]); `token_nll(x, y, state, arc, training)`.

    Weights (enas_lm's paths): `child/embedding/w` [V, H],
    `child/rnn_cell/w_prev` [2H, 2H], `child/rnn_cell/layer_{k}/w`
    [4, k, H, 2H] for node k = 1..K (node k with function f reading node p
    uses block [f, p]), and the carried state `child/init_states/batch/s`.
    """

    searching = True

    def __init__(self, cfg, name="child", **kwargs):
        super().__init__(name=name, **kwargs)
        cfg.validate()
        if cfg.fixed_arc is not None:
            raise ValueError("the search child takes its arc at call time; "
                             "cfg.fixed_arc must be None")
        self.cfg = cfg
        h, r, k = cfg.hidden_size, cfg.init_range, cfg.num_layers
        seeds = seed_stream(cfg.seed, k + 2)

        def init():
            return keras.initializers.RandomUniform(
                -r, r, seed=None if seeds is None else next(seeds))

        self.embedding = WeightScope(
            "embedding", weights=[("w", (cfg.vocab_size, h), init())])
        self.rnn_cell = WeightScope(
            "rnn_cell", weights=[("w_prev", (2 * h, 2 * h), init())],
            children=[WeightScope("layer_{}".format(node), weights=[
                ("w", (len(ENAS_LM_FUNCS), node, h, 2 * h), init())])
                for node in range(1, k + 1)])
        self.init_states = WeightScope("init_states", children=[
            WeightScope("batch", weights=[("s", (cfg.batch_size, h),
                                           keras.initializers.Zeros())])])
        self.build()

    def build(self, input_shape=None):
        self.embedding.build()
        self.rnn_cell.build()
        self.init_states.build()
        self.init_states.children[0].s.trainable = False
        self.dropout_seed = keras.random.SeedGenerator(self.cfg.seed,
                                                       name="dropout")
        self.built = True

    @property
    def w_emb(self):
        return self.embedding.w

    @property
    def w_prev(self):
        return self.rnn_cell.w_prev

    @property
    def w_nodes(self):
        """Node k's shared weight [4, k, H, 2H] at k - 1."""
        return [scope.w for scope in self.rnn_cell.children]

    def optimizer_variables(self):
        """The trainable weights in enas_lm's order: embedding, w_prev,
        layer_1 .. layer_K."""
        return [self.w_emb, self.w_prev] + self.w_nodes

    @property
    def batch_state(self):
        return self.init_states.children[0].s

    def zero_state(self, batch_size):
        return tf.zeros([batch_size, self.cfg.hidden_size])

    def output_mask(self, prevs):
        """[K] float32: which nodes 1..K the output averages (every one, or
        the loose ends with `average_loose_ends`)."""
        k = self.cfg.num_layers
        if not self.cfg.average_loose_ends:
            return tf.ones([k])
        used = tf.reduce_any(tf.equal(prevs[None, :],
                                      tf.range(1, k + 1)[:, None]), axis=1)
        return 1.0 - tf.cast(used, tf.float32)

    def forward(self, tokens, state, arc=None, training=False):
        """(outputs [N, T, H], next state, the cell weights used: w_prev
        and each node's selected [H, 2H] block)."""
        if arc is None:
            raise ValueError("the search child needs an arc")
        h = self.cfg.hidden_size
        arc = tf.cast(tf.convert_to_tensor(arc), tf.int32)
        prevs, funcs = arc[0::2], arc[1::2]
        emb, input_mask, layer_mask, w_masks = self._inputs(tokens, training)
        w_prev = self.w_prev
        w_nodes = [tf.gather_nd(w, tf.stack([funcs[k], prevs[k]])[None])[0]
                   for k, w in enumerate(self.w_nodes)]
        if w_masks is not None:
            w_prev = tf.concat([w_prev[:h], w_prev[h:] * w_masks[0]], 0)
            w_nodes = [w * m for w, m in zip(w_nodes, w_masks[1:])]
        w_state = w_prev[h:]
        prev_list = tf.unstack(prevs, num=self.cfg.num_layers)
        func_list = tf.unstack(funcs, num=self.cfg.num_layers)
        out_mask = self.output_mask(prevs)

        def step(x_part, s):
            return search_step(x_part, s, w_state, w_nodes, prev_list,
                               func_list, layer_mask, out_mask)

        outputs, next_state = self._run(emb, state, input_mask, w_prev, step)
        return outputs, next_state, [w_prev] + w_nodes
