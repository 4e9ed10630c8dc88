"""hal.ir.graph._valid_name: the ASCII fast path accepts and refuses exactly what the
per-character definition does (letters and digits of any script, '_' and '.', not
starting with '.')."""

import pytest

from hal.ir.graph import _valid_name


def _defined(name: str) -> bool:
    return all(ch.isalnum() or ch in "_." for ch in name) and not name[0] == "."


NAMES = ["x", "x0", "0", "_", "a.b", "a..b", "a.", ".a", ".", "a-b", "a b", "a\n", "\na",
         "é", "xé", "ß.1", "٣", "a$", "a/b", "A_Z.9", "q:1", "a\t", "ｘ", "x\u200b"]


@pytest.mark.parametrize("name", NAMES)
def test_valid_name_is_the_per_character_definition(name):
    assert _valid_name(name) is _defined(name)


def test_verify_refuses_a_bad_name():
    from hal.dtypes import f32
    from hal.errors import GraphError
    from hal.ir import GraphBuilder

    b = GraphBuilder("g")
    x = b.input("x", f32, (4,))
    b.output(b.op("exp", x))
    g = b.build()
    g.inputs[0].name = "a-b"
    with pytest.raises(GraphError, match="not a valid value name"):
        g.verify()
