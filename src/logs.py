"""Reading a run's log: `python -m src.logs outputs/run/stdout [--out=PATH]`.

Turns the stdout of a run (this port's or the reference's: the lines are
the same) into JSON lines, one object per event, each with a "type":

  flag              name, value: the dotted 80-wide flag lines
  train             epoch, step, loss, lr, grad_norm, mins, and CIFAR's
                    train_correct / train_total (train_acc their ratio) or
                    PTB's train_ppl
  controller        step, loss, entropy, lr, grad_norm, acc (CIFAR) or rw
                    (PTB), baseline, mins
  epoch_controller  epoch: "Epoch N: Training controller"
  eval              split, epoch ("Epoch N: Eval", when it heads the
                    evaluation), step ("Eval at N"), and CIFAR's
                    {split}_accuracy or PTB's {split}_total_loss,
                    {split}_log_ppl, {split}_ppl (and the verbose progress
                    lines as [[words, ppl so far], ...])
  architecture      arc (in the --child_fixed_arc encoding), space, epoch,
                    index in its "Here are 10 architectures" block, and
                    CIFAR's val_acc and printed lines, or PTB's rw
  resume            checkpoint, epoch, step: this port's "Resuming from"
  enas_lm's lines (python -m src.enas_lm.fixed / .search, and the authors'
  own code): train (epoch, step, train_ppl, lr, grad_norm, mins, and the
  fixed model's averaging or the search's l2_reg), controller (step,
  entropy, ppl, rw, baseline, arc), eval (split valid, valid_ppl; split
  test, step, test_ppl: every 1000 tokens and at the end), averaging
  ("Starting moving_avg")
  summary           lines, parsed: the last object

Every event but the summary has "line", the 1-based number of its first
line. Other lines are skipped. The reference's quirks are handled:
left-aligned padded numbers ("loss=2.302585 lr=0.0500  "), "tr_acc=9  /
32", numpy's printing of arcs (padded numbers, long arcs wrapped over
several lines), flag lines with no dots left when the name and value fill
80 characters. In the JSON lines, NaN and infinities are written as the
strings "nan", "inf" and "-inf" (parse_lines keeps them as floats).

A flag line cannot tell the separating dots from dots the value starts
with ("data_path......../shared/data"): such a value is read as starting
with "/" and, unless `flag_hints` (or the flags.txt beside the log, on the
command line) settles it, the event lists the readings in "candidates".

No TensorFlow: this starts in a fraction of a second.
"""

import json
import math
import os
import re
import sys

from absl import flags

from src import flagfile, tool
from src.arc import search_for_spaces
from src.errors import UserError

_NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
# key=value pairs of the train and controller lines; "tr_acc=9  / 32".
_KV = re.compile(r"([A-Za-z_|]+)=\s*(" + _NUM + r")(?:\s*/\s*(\d+))?",
                 re.IGNORECASE)
_FLAG_DOTTED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\.+)(.*)$")
# A flag line with no room for dots: a long value (an arc, a path) straight
# after a name with an underscore, in the flag block.
_FLAG_FULL = re.compile(r"^([a-z][A-Za-z]*_[A-Za-z_]*)([^A-Za-z_\s.=:].*)$")
_DASHES = re.compile(r"^-{20,}\s*$")
_EPOCH_EVAL = re.compile(r"^Epoch (\d+): Eval\s*$")
_EPOCH_CONTROLLER = re.compile(r"^Epoch (\d+): Training controller\s*$")
_EVAL_AT = re.compile(r"^Eval at (\d+)\s*$")
_ACCURACY = re.compile(r"^(\w+?)_accuracy:\s*(" + _NUM + r")\s*$",
                       re.IGNORECASE)
_PPL = re.compile(r"^(\w+?)_(total_loss|log_ppl|ppl):\s*(" + _NUM
                  + r")\s*$", re.IGNORECASE)
_PROGRESS = re.compile(r"^(\d+)\s+(" + _NUM + r")\s*$", re.IGNORECASE)
_HERE_ARE = re.compile(r"^Here are (\d+) architectures\s*$")
_VAL_ACC = re.compile(r"^val_acc=\s*(" + _NUM + r")\s*$", re.IGNORECASE)
_ARRAY = re.compile(r"^\s*\[([^\[\]]*)\](.*)$", re.DOTALL)
_RW = re.compile(r"^\s*rw=\s*(" + _NUM + r")\s*$", re.IGNORECASE)
_RESUME = re.compile(r"^Resuming from (.+) \(epoch (\d+), step (\d+)\)\s*$")
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$")

FLAG_WIDTH = 80
# The longest numpy printout of one arc line that is still read as one.
_MAX_ARRAY_LINES = 64

TRAIN_FIELDS = {"epoch": "epoch", "ch_step": "step", "loss": "loss",
                "lr": "lr", "|g|": "grad_norm", "mins": "mins"}
CONTROLLER_FIELDS = {"ctrl_step": "step", "loss": "loss", "ent": "entropy",
                     "lr": "lr", "|g|": "grad_norm", "bl": "baseline",
                     "mins": "mins"}
_INT_FIELDS = ("epoch", "step")
# enas_lm's lines (`src.enas_lm`, and the authors' own code): the fixed
# model's and the search's child lines, its controller line, and its
# evaluation lines.
ENAS_LM_FIXED_FIELDS = {"epoch": "epoch", "step": "step", "ppl": "train_ppl",
                        "lr": "lr", "|g|": "grad_norm", "avg": "averaging",
                        "mins": "mins"}
ENAS_LM_SEARCH_FIELDS = {"epoch": "epoch", "step": "step",
                         "ppl": "train_ppl", "lr": "lr", "|w|": "l2_reg",
                         "|g|": "grad_norm", "mins": "mins"}
ENAS_LM_CONTROLLER_FIELDS = {"step": "step", "ent": "entropy", "ppl": "ppl",
                             "rw": "rw", "bl": "baseline"}
_ENAS_LM_ARC = re.compile(r"\barc=\[([\d\s]*)\]\s*$")
_ENAS_LM_VALID = re.compile(r"^valid_ppl=(" + _NUM + r")\s*$", re.IGNORECASE)
_ENAS_LM_TEST = re.compile(r"^step=(\d+)\s+test_ppl=(" + _NUM + r")\s*$",
                           re.IGNORECASE)


def flag_value(text):
    """A printed flag value as Python: None, True/False, int, float, or the
    string itself."""
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _key_values(text):
    out = {}
    for key, value, total in _KV.findall(text):
        out[key] = (value, total)
    return out


def _fields(pairs, names):
    event = {}
    for key, name in names.items():
        value = pairs[key][0]
        event[name] = int(value) if name in _INT_FIELDS else float(value)
    return event


def _arc_space(lines):
    """macro or micro from the shape of a CIFAR architecture printout (None
    when neither fits): micro prints two equally long cells of (index, op,
    index, op) nodes; macro one line per layer, each one longer."""
    lengths = [len(line) for line in lines]
    if (len(lines) == 2 and lengths[0] == lengths[1]
            and lengths[0] % 4 == 0):
        return "micro"
    if lengths and all(n == lengths[0] + i for i, n in enumerate(lengths)):
        return "macro"
    return None


class _Parser:
    """A line-by-line reader keeping the little state the log needs: the
    flag block, an open numpy array, the architecture block, the headers
    of the controller phase and of the evaluation, an evaluation in
    progress."""

    def __init__(self, flag_hints=None):
        self.hints = dict(flag_hints or {})
        self.events = []
        self.lines = 0
        self.parsed = 0
        self.prev = None          # kind of the previous line
        self.search_for = None    # from the flags, for the arc's space
        self.spaces = search_for_spaces()
        self.controller_epoch = None
        self.eval_epoch = None
        self.eval = None          # evaluation in progress
        self.arch_block = False
        self.arch_index = 0
        self.arch_lines = []      # [(line number, ints)] before val_acc
        self.array = None         # (first line number, [texts]) if open

    # -- output

    def _emit(self, number, event_type, **fields):
        event = {"type": event_type, "line": number}
        event.update(fields)
        self.events.append(event)
        return event

    def _flush_eval(self):
        if self.eval is not None and self.eval["values"]:
            ev = self.eval
            fields = {"split": ev["split"], "epoch": ev["epoch"],
                      "step": ev["step"]}
            fields.update(ev["values"])
            if ev["progress"]:
                fields["progress"] = ev["progress"]
            self._emit(ev["line"], "eval", **fields)
        self.eval = None

    # -- the line kinds

    def _flag(self, number, text):
        m = None
        if len(text) == FLAG_WIDTH:
            m = _FLAG_DOTTED.match(text)
        if m:
            name, dots, value = m.groups()
            event = {"name": name, "value": value}
            hint = self.hints.get(name)
            candidates = [dots[len(dots) - k:] + value
                          for k in range(min(len(dots), 2) + 1)]
            if hint is not None and hint in candidates:
                event["value"] = hint
            elif value.startswith("/") and len(candidates) > 1:
                event["candidates"] = candidates
        elif self.prev in ("flag", "dashes") and len(text) >= FLAG_WIDTH:
            # Name and value fill the width: no dots between them.
            known = [n for n in self.hints if text.startswith(n)
                     and len(text) > len(n)]
            if known:
                name = max(known, key=len)
                event = {"name": name, "value": text[len(name):]}
            else:
                m = _FLAG_FULL.match(text)
                if not m:
                    return False
                event = {"name": m.group(1), "value": m.group(2)}
        else:
            return False
        event["value"] = flag_value(event["value"])
        if event["name"] == "search_for":
            self.search_for = event["value"]
        self._emit(number, "flag", **event)
        return True

    def _train_or_controller(self, number, text):
        if not (text.startswith("epoch=") or text.startswith("ctrl_step=")):
            return False
        pairs = _key_values(text)
        if text.startswith("epoch="):
            if not set(TRAIN_FIELDS) <= set(pairs):
                return False
            event = _fields(pairs, TRAIN_FIELDS)
            if "tr_acc" in pairs and pairs["tr_acc"][1]:
                correct, total = pairs["tr_acc"]
                event["train_correct"] = int(float(correct))
                event["train_total"] = int(total)
                event["train_acc"] = (event["train_correct"]
                                      / event["train_total"]
                                      if int(total) else float("nan"))
            elif "tr_ppl" in pairs:
                event["train_ppl"] = float(pairs["tr_ppl"][0])
            else:
                return False
            kind = "train"
        else:
            if not set(CONTROLLER_FIELDS) <= set(pairs):
                return False
            event = _fields(pairs, CONTROLLER_FIELDS)
            for key in ("acc", "rw"):
                if key in pairs:
                    event[key] = float(pairs[key][0])
            if "acc" not in event and "rw" not in event:
                return False
            kind = "controller"
        self._emit(number, kind, **event)
        return True

    def _evaluation(self, number, text):
        m = _EPOCH_EVAL.match(text)
        if m:
            self._flush_eval()
            self.eval_epoch = int(m.group(1))
            return True
        m = _EVAL_AT.match(text)
        if m:
            self._flush_eval()
            self.eval = {"line": number, "split": None,
                         "epoch": self.eval_epoch, "step": int(m.group(1)),
                         "values": {}, "progress": []}
            return True
        m = _ACCURACY.match(text)
        if m:
            split, value = m.groups()
            self._start_values(number, split)
            self.eval["values"]["{}_accuracy".format(split)] = float(value)
            self._flush_eval()
            return True
        m = _PPL.match(text)
        if m:
            split, what, value = m.groups()
            self._start_values(number, split)
            self.eval["values"]["{}_{}".format(split, what)] = float(value)
            if what == "ppl":  # the last of the three
                self._flush_eval()
            return True
        if self.eval is not None and not self.eval["values"]:
            m = _PROGRESS.match(text)
            if m:
                self.eval["progress"].append(
                    [int(m.group(1)), float(m.group(2))])
                return True
        return False

    def _start_values(self, number, split):
        ev = self.eval
        if ev is not None and ev["split"] not in (None, split):
            self._flush_eval()
            ev = None
        if ev is None:
            self.eval = ev = {"line": number, "split": split,
                              "epoch": self.eval_epoch, "step": None,
                              "values": {}, "progress": []}
        ev["split"] = split

    def _architecture(self, number, text):
        """A line of a "Here are N architectures" block: how many lines it
        completes (0 while a numpy array is still open), or None when the
        block has ended."""
        if self.array is not None:
            self.array[1].append(text)
            if "]" in text:
                return self._close_array()
            if len(self.array[1]) > _MAX_ARRAY_LINES:
                return None
            return 0
        if text.lstrip().startswith("["):
            self.array = (number, [text])
            if "]" in text:
                return self._close_array()
            return 0
        m = _VAL_ACC.match(text)
        if m and self.arch_lines:
            lines = [ints for _, ints in self.arch_lines]
            space = _arc_space(lines) or self.spaces.get(self.search_for)
            fields = {"space": space,
                      "arc": " ".join(str(v) for line in lines for v in line),
                      "val_acc": float(m.group(1)),
                      "epoch": self.controller_epoch,
                      "index": self.arch_index, "lines": lines}
            if space == "macro":
                fields["num_layers"] = len(lines)
                fields["whole_channels"] = len(lines[0]) == 1
            elif space == "micro":
                fields["num_cells"] = len(lines[0]) // 4
            self._emit(self.arch_lines[0][0], "architecture", **fields)
            self.arch_index += 1
            self.arch_lines = []
            return 1
        if _DASHES.match(text):
            return 1
        return None

    def _close_array(self):
        """An array printout is complete: a CIFAR arc line (kept until its
        val_acc) or a PTB `[...] rw=...` architecture."""
        number, texts = self.array
        self.array = None
        m = _ARRAY.match("\n".join(texts))
        tokens = m.group(1).split() if m else []
        if not m or not tokens or not all(_INT.match(t) for t in tokens):
            return None
        ints = [int(t) for t in tokens]
        suffix = m.group(2)
        if not suffix.strip():
            self.arch_lines.append((number, ints))
            return len(texts)
        rw = _RW.match(suffix)
        if not rw:
            return None
        self._emit(number, "architecture", space="ptb",
                   arc=" ".join(str(v) for v in ints),
                   rw=float(rw.group(1)), epoch=self.controller_epoch,
                   index=self.arch_index)
        self.arch_index += 1
        return len(texts)

    # -- dispatch

    def _enas_lm(self, number, text):
        """enas_lm's lines; returns the kind, or None."""
        m = _ENAS_LM_VALID.match(text)
        if m:
            self._emit(number, "eval", split="valid",
                       valid_ppl=float(m.group(1)))
            return "eval"
        m = _ENAS_LM_TEST.match(text)
        if m:
            self._emit(number, "eval", split="test", step=int(m.group(1)),
                       test_ppl=float(m.group(2)))
            return "eval"
        if text.strip() == "Starting moving_avg":
            self._emit(number, "averaging")
            return "averaging"
        pairs = _key_values(text)
        for prefix, names, kind in (
                ("epoch=", ENAS_LM_FIXED_FIELDS, "train"),
                ("epoch=", ENAS_LM_SEARCH_FIELDS, "train"),
                ("step=", ENAS_LM_CONTROLLER_FIELDS, "controller")):
            if text.startswith(prefix) and set(names) <= set(pairs):
                event = _fields(pairs, names)
                if "averaging" in event:
                    event["averaging"] = int(event["averaging"])
                if kind == "controller":
                    arc = _ENAS_LM_ARC.search(text)
                    if arc is None:
                        return None
                    event["arc"] = " ".join(arc.group(1).split())
                self._emit(number, kind, **event)
                return "step"
        return None

    def feed(self, raw):
        self.lines += 1
        text = raw.rstrip("\r\n")
        if "\r" in text:  # progress rewritten in place: its last state
            text = text.rsplit("\r", 1)[1]
        self.prev = self._classify(self.lines, text)

    def _classify(self, number, text):
        """Handles one line; returns its kind (None: skipped)."""
        if self.arch_block:
            done = self._architecture(number, text)
            if done is not None:
                self.parsed += done
                return "architecture"
            self.arch_block = False
            self.arch_lines = []
            self.array = None
        if _DASHES.match(text):
            self._flush_eval()
            self.eval_epoch = None
            return "dashes"
        kind = self._recognise(number, text)
        if kind is not None:
            self.parsed += 1
        return kind

    def _recognise(self, number, text):
        if self._flag(number, text):
            return "flag"
        if self._train_or_controller(number, text):
            self._flush_eval()
            self.eval_epoch = None
            return "step"
        kind = self._enas_lm(number, text)
        if kind is not None:
            return kind
        if self._evaluation(number, text):
            return "eval"
        m = _EPOCH_CONTROLLER.match(text)
        if m:
            self._flush_eval()
            self.eval_epoch = None
            self.controller_epoch = int(m.group(1))
            self._emit(number, "epoch_controller", epoch=int(m.group(1)))
            return "epoch_controller"
        m = _HERE_ARE.match(text)
        if m:
            self._flush_eval()
            self.arch_block = True
            self.arch_index = 0
            self.arch_lines = []
            return "architecture"
        m = _RESUME.match(text)
        if m:
            self._flush_eval()
            self.eval_epoch = None
            self._emit(number, "resume", checkpoint=m.group(1),
                       epoch=int(m.group(2)), step=int(m.group(3)))
            return "resume"
        return None

    def finish(self):
        self._flush_eval()
        self.events.append({"type": "summary", "lines": self.lines,
                            "parsed": self.parsed})
        return self.events


def parse_lines(lines, flag_hints=None):
    """Events of a run's stdout (an iterable of lines, newlines optional),
    ending with the summary. flag_hints: {flag name: value as written in
    the run's flags.txt}, to settle flag lines whose value starts with
    dots."""
    parser = _Parser(flag_hints)
    for line in lines:
        parser.feed(line)
    return parser.finish()


def read_flags_txt(path):
    """{name: value} of a flagfile's `--name=value`, `--name` and
    `--noname` lines (values as the run printed them): `flagfile.read`.
    UserError when it cannot be read."""
    return flagfile.read(path)


def _finite(value):
    """JSON has no NaN or infinity: they are written as "nan", "inf",
    "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0
                                                else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json_lines(events):
    return "".join(json.dumps(_finite(e)) + "\n" for e in events)


def main(flag_values, argv):
    if len(argv) != 2:
        raise UserError("give one run's stdout file (or its output folder): "
                        "python -m src.logs outputs/run/stdout [--out=PATH]")
    path = argv[1]
    if os.path.isdir(path):
        path = os.path.join(path, "stdout")
    hints = {}
    flags_txt = os.path.join(os.path.dirname(path), "flags.txt")
    if path != "-" and os.path.isfile(flags_txt):
        try:
            hints = read_flags_txt(flags_txt)
        except (UserError, UnicodeDecodeError):
            hints = {}
    try:
        if path == "-":
            events = parse_lines(sys.stdin, hints)
        else:
            with open(path, errors="replace") as f:
                events = parse_lines(f, hints)
    except OSError as e:
        raise UserError("cannot read {}: {}".format(
            path, e.strerror or e)) from None
    text = to_json_lines(events)
    out = flag_values.out
    if out:
        try:
            with open(out, "w") as f:
                f.write(text)
        except OSError as e:
            raise UserError("cannot write --out={}: {}".format(
                out, e.strerror or e)) from None
        return 0
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def define_flags(fv):
    """Defines this tool's absl flags into `fv`."""
    flags.DEFINE_string("out", None, "Write the JSON lines here "
                        "(default: stdout).", flag_values=fv)
    return fv


def call(argv=None):
    """The command line in this process, returning its exit status (its
    own FlagValues: no clash with an entry point's flags); user errors
    become one line and status 2."""
    return tool.call(define_flags, main, argv, __doc__)


def run(argv=None):
    """`python -m src.logs`: `call(argv)`, then exit with its status."""
    sys.exit(call(argv))


if __name__ == "__main__":
    run()
