"""PtbArc: the reference's PTB `--child_fixed_arc` encoding."""

import pytest

from src.errors import UserError
from src.ptb.arcs import PTB_FUNCS, PtbArc, ptb_arc_length

FINAL_ARC = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"


def test_final_script_arc_decodes_into_nodes_and_loose_ends():
    arc = PtbArc.parse(FINAL_ARC, 12)
    assert arc.funcs == (0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1)
    assert arc.prevs == (None, 0, 1, 2, 2, 2, 5, 1, 6, 8, 8, 8)
    assert arc.loose_ends() == [3, 4, 7, 9, 10, 11]
    assert str(arc) == FINAL_ARC
    assert arc.to_list() == [int(v) for v in FINAL_ARC.split()]
    assert arc.describe()[0] == "node 0: tanh(input + state)"
    assert arc.describe()[3] == "node 3: relu(node 2)  -> output"


def test_length_is_two_per_node_but_the_first():
    assert [ptb_arc_length(d) for d in (1, 2, 12)] == [1, 3, 23]
    assert PtbArc.parse([3], 1).loose_ends() == [0]


def test_a_chain_has_only_the_last_node_as_loose_end():
    arc = PtbArc.parse([0, 0, 1, 1, 2, 2, 3], 4)
    assert arc.loose_ends() == [3]
    assert [PTB_FUNCS[f] for f in arc.funcs] == ["tanh", "relu", "identity",
                                                 "sigmoid"]


@pytest.mark.parametrize("text, depth, fragment", [
    ("0 0 1", 3, "has 3 integers but --child_rhn_depth=3 needs 5"),
    ("0 0 x", 2, "position 2 is 'x', not an integer"),
    ("0 1 0", 2, "node 1, position 1: previous node 1"),
    ("0 0 0 2 0", 3, "node 2, position 3: previous node 2"),
    ("0 -1 0", 2, "previous node -1"),
    ("4 0 0", 2, "node 0, position 0: activation 4 is out of range 0..3"),
    ("0 0 2.5", 2, "not an integer"),
])
def test_malformed_arcs_get_one_line_errors_naming_the_place(text, depth,
                                                             fragment):
    with pytest.raises(UserError) as e:
        PtbArc.parse(text, depth)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_fewer_functions_limit_the_valid_activations():
    PtbArc.parse("1 0 1", 2, num_funcs=2)
    with pytest.raises(UserError, match=r"activation 2 is out of range 0\.\.1"
                       r" \(tanh, relu\)"):
        PtbArc.parse("0 0 2", 2, num_funcs=2)


# ------------------------------------------- what `python -m src.arc` uses

def test_from_text_infers_the_depth_and_equals_parse():
    assert PtbArc.from_text(FINAL_ARC) == PtbArc.parse(FINAL_ARC, 12)
    with pytest.raises(UserError, match="--child_rhn_depth=3 needs 5"):
        PtbArc.from_text(FINAL_ARC, {"child_rhn_depth": 3})
    with pytest.raises(UserError) as e:
        PtbArc.from_text("0 0", flag="--arc")
    assert str(e.value) == (
        "--arc has 2 integers, an even number (a PTB cell of depth d has "
        "2d - 1: one activation for node 0, then a previous node and an "
        "activation per node): check the arc, or give --child_rhn_depth")


def test_listing_and_dot_lines():
    lines = PtbArc.parse(FINAL_ARC, 12).listing()
    assert lines[:2] == ["ptb cell: 12 nodes (23 integers)",
                         "  " + FINAL_ARC]
    assert lines[-1] == "  h_t: mean of nodes 3, 4, 7, 9, 10, 11"
    dot = PtbArc.parse("0 0 1", 2).dot_lines()
    assert dot[0] == "digraph ptb {" and dot[-1] == "}"
    assert '  node_1 [label="node 1\\nrelu"];' in dot
    assert "  node_0 -> node_1;" in dot and "  node_1 -> avg;" in dot


def test_the_tool_attributes():
    from src.ptb import arcs
    assert arcs.ARC_CLASS is PtbArc
    assert PtbArc.RECORD_KEYS == ("cell",)
    # The reference's other PTB --search_for values.
    assert PtbArc.SEARCH_FOR_ALIASES == ("rhn", "base")
    assert PtbArc.SPACE_FLAGS == ("child_rhn_depth",)
