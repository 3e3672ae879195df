"""What every space's arc class shares: reading an arc's integers from a
string or a sequence (a one-line error naming the bad position), the size
flags `python -m src.arc` defines from the classes' `SIZE_FLAGS`, and the
Graphviz DOT statements of their `dot_lines()`. Pure Python, no
TensorFlow."""

import dataclasses

from src.errors import UserError


def parse_ints(text, flag):
    """The integers of `text` (a string separated by spaces or commas, or a
    sequence of numbers); UserError naming `flag` and the position of the
    first value that is not an integer."""
    if isinstance(text, str):
        tokens = text.replace(",", " ").split()
    else:
        tokens = list(text)
    values = []
    for pos, tok in enumerate(tokens):
        try:
            if isinstance(tok, str):
                values.append(int(tok))
            elif float(tok) != int(tok):
                raise ValueError(tok)
            else:
                values.append(int(tok))
        except (TypeError, ValueError):
            raise UserError(
                "{}: position {} is {!r}, not an integer: give integers "
                "separated by spaces".format(flag, pos, tok)) from None
    return values



def arc_ints(text, flag):
    """`parse_ints`, and a UserError when there are none: what the arc
    classes' `from_text` read before inferring a size from the count."""
    values = parse_ints(text, flag)
    if not values:
        raise UserError("{} is empty: give the arc's integers".format(flag))
    return values


def ints_text(values):
    """Integers as the arcs print them: separated by single spaces."""
    return " ".join(str(v) for v in values)


def size_arg(sizes, name, default=None):
    """sizes[name], or `default` when it is missing or None (a size flag
    not given)."""
    value = (sizes or {}).get(name)
    return default if value is None else value


@dataclasses.dataclass(frozen=True)
class SizeFlag:
    """A flag that sets the size of a space's arc in `python -m src.arc`
    (named as the entry point's flag, so a run's flagfile gives it): kind
    "integer" or "boolean", the default its help shows, and its help."""
    name: str
    kind: str
    default: object
    help: str


# ---------------------------------------------------------------- DOT
# Graphviz DOT text, one statement a line, indented two spaces.

def dot_attrs(**attrs):
    """` [k="v", ...]` (empty without attributes); quotes in values are
    escaped."""
    if not attrs:
        return ""
    return " [{}]".format(", ".join(
        '{}="{}"'.format(k, str(v).replace('"', '\\"'))
        for k, v in attrs.items()))


def dot_node(name, label, **attrs):
    return "  {}{};".format(name, dot_attrs(label=label, **attrs))


def dot_edge(src, dst, **attrs):
    return "  {} -> {}{};".format(src, dst, dot_attrs(**attrs))
