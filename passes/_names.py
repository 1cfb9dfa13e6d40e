"""Fresh names for values and nodes a rewrite adds."""

from __future__ import annotations

import onnx_ir as ir


class Names:
    """Names that clash with no value, initializer, graph input or node of the graph."""

    def __init__(self, graph: ir.Graph):
        self.taken = {v.name for v in graph.inputs} | set(graph.initializers)
        self.taken |= {name for node in graph for name in (node.name, *(v.name for v in node.outputs)) if name}

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.taken:
            name, index = f"{base}_{index}", index + 1
        self.taken.add(name)
        return name
