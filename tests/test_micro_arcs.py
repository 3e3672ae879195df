"""Parsing, validation and printing of micro arcs."""

import pytest

from src.micro import arcs
from src.errors import UserError

# scripts/cifar10_micro_final.sh
FINAL = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
         "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")


def parse(text=FINAL, num_cells=5):
    return arcs.MicroArc.parse(text, num_cells)


def test_op_table_and_arc_length():
    assert arcs.MICRO_OPS == ("sep_conv_3x3", "sep_conv_5x5",
                              "avg_pool_3x3", "max_pool_3x3", "identity")
    assert arcs.micro_arc_length(5) == 40
    assert arcs.micro_arc_length(1) == 8


def test_final_arc_splits_into_cells_of_nodes():
    arc = parse()
    assert arc.num_cells == 5
    assert arc.normal[0] == (0, 2, 0, 0)
    assert arc.normal[4] == (0, 2, 1, 1)
    assert arc.reduce[2] == (1, 1, 3, 1)
    assert arc.cell("normal") is arc.normal
    assert arc.cell("reduction") is arc.reduce


def test_round_trip_and_cell_lines():
    arc = parse()
    assert str(arc) == FINAL
    assert arc.to_list() == [int(v) for v in FINAL.split()]
    normal, reduce = arc.cell_lines()
    assert normal == [int(v) for v in FINAL.split()[:20]]
    assert reduce == [int(v) for v in FINAL.split()[20:]]
    assert arcs.MicroArc.from_cells(normal, reduce, 5) == arc
    # A sequence of ints (e.g. numpy values) parses as the string does.
    assert parse(arc.to_list()) == arc


def test_outputs_are_the_nodes_no_node_reads():
    arc = parse()
    # Normal cell: every node reads inputs 0/1 only, so all 5 nodes are
    # concatenated; reduction cell: node 1 (index 3) is read by node 2.
    assert arc.outputs("normal") == [2, 3, 4, 5, 6]
    assert arc.outputs("reduction") == [2, 4, 5, 6]
    one = arcs.MicroArc.parse("0 0 0 1  2 2 2 3  1 4 1 4  2 4 0 4", 2)
    assert one.outputs("normal") == [1, 3]
    assert one.outputs("reduction") == [3]


def test_describe_names_ops_inputs_and_the_output():
    lines = parse().describe()
    assert lines[0] == "normal cell:"
    assert lines[1] == ("  node 0: avg_pool_3x3(input 0) + "
                        "sep_conv_3x3(input 0)")
    assert lines[6] == ("  output: concat(node 0, node 1, node 2, node 3, "
                        "node 4)")
    assert lines[7] == "reduction cell:"
    assert lines[10] == ("  node 2: sep_conv_5x5(input 1) + "
                         "sep_conv_5x5(node 1)")
    assert lines[-1] == "  output: concat(node 0, node 2, node 3, node 4)"


def _with(position, value, text=FINAL):
    values = text.split()
    values[position] = str(value)
    return " ".join(values)


@pytest.mark.parametrize("text, pattern", [
    ("0 2 0", "has 3 integers but --child_num_cells=5 needs 40"),
    (_with(1, 5), "normal cell, node 0, position 1: op 5 is out of range "
                  "0..4"),
    (_with(23, -1), "reduction cell, node 0, position 23: op -1"),
    # Node 0 may read inputs 0 and 1 only: index 2 would be itself.
    (_with(0, 2), "normal cell, node 0, position 0: input index 2 is out of "
                  "range 0..1"),
    # Node 3 of the reduction cell (positions 32..35) may read 0..4.
    (_with(34, 5), "reduction cell, node 3, position 34: input index 5 is "
                   "out of range 0..4"),
    (_with(8, -1), "normal cell, node 2, position 8: input index -1"),
    (_with(7, "x"), "position 7 is 'x', not an integer"),
    (_with(7, "1.5"), "position 7 is '1.5', not an integer"),
])
def test_malformed_arcs_are_rejected_with_cell_node_and_position(text,
                                                                 pattern):
    with pytest.raises(UserError, match=pattern) as e:
        parse(text)
    assert "\n" not in str(e.value)


def test_an_index_may_read_every_earlier_node():
    # Node k may read up to index k + 1 (the node just before it).
    text = " ".join("{0} 4 {0} 4".format(k + 1) for k in range(5))
    arc = arcs.MicroArc.parse(text + " " + text, 5)
    assert arc.normal[4] == (5, 4, 5, 4)
    assert arc.outputs("normal") == [0, 6]


# ------------------------------------------- what `python -m src.arc` uses

def test_from_text_infers_the_cells_and_equals_parse():
    assert arcs.MicroArc.from_text(FINAL) == parse()
    assert arcs.MicroArc.from_text(FINAL, {"child_num_cells": None}) == \
        parse()
    with pytest.raises(UserError, match="--child_num_cells=4 needs 32"):
        arcs.MicroArc.from_text(FINAL, {"child_num_cells": 4})
    with pytest.raises(UserError) as e:
        arcs.MicroArc.from_text("0 0 0 0", flag="--arc")
    assert str(e.value) == (
        "--arc has 4 integers, not a multiple of 8 (index, op, index, op per "
        "node, for the normal cell then the reduction cell): check the arc, "
        "or give --child_num_cells")
    with pytest.raises(UserError, match="--arc is empty"):
        arcs.MicroArc.from_text(" ", flag="--arc")


def test_listing_and_dot_lines():
    lines = parse().listing()
    assert lines[0] == "micro arc: 5 nodes per cell (40 integers)"
    assert lines[1] == "  normal cell:    " + " ".join(FINAL.split()[:20])
    assert lines[2] == "  reduction cell: " + " ".join(FINAL.split()[20:])
    assert "  normal cell:" in lines and "  reduction cell:" in lines
    dot = parse().dot_lines()
    assert dot[0] == "digraph micro {" and dot[-1] == "}"
    assert "  subgraph cluster_reduce {" in dot
    assert '    normal_n0_op1 [label="avg_pool_3x3", style="rounded"];' \
        in dot


def test_the_tool_attributes():
    assert arcs.ARC_CLASS is arcs.MicroArc
    assert arcs.MicroArc.RECORD_KEYS == ("normal", "cells")
    assert [s.name for s in arcs.MicroArc.SIZE_FLAGS] == ["child_num_cells"]
