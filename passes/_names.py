"""Fresh names for values and nodes a rewrite adds."""

from __future__ import annotations

import onnx_ir as ir


class Names:
    """Names that clash with no value, initializer, graph input or node of the graph, nor of the
    If/Loop bodies inside it: a new main-graph tensor named as a branch's made ORT refuse the model
    (two producers of one name), and a branch's named as an outer tensor shadowed it (onnx's
    checker failed). Give the main graph to cover the whole model."""

    def __init__(self, graph: ir.Graph):
        graphs = [graph, *(attr.as_graph() for node in ir.traversal.RecursiveGraphIterator(graph)
                           for attr in node.attributes.values() if attr.type == ir.AttributeType.GRAPH)]
        self.taken = set()
        for each in graphs:
            self.taken |= {v.name for v in each.inputs} | set(each.initializers)
            self.taken |= {name for node in each for name in (node.name, *(v.name for v in node.outputs)) if name}

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.taken:
            name, index = f"{base}_{index}", index + 1
        self.taken.add(name)
        return name
