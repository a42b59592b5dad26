"""Split any model at a ``target_layer``: ``f(x) = h(g(x))``, with no hook and no copy.

The model is traced once with ``torch.fx`` (``target_layer`` is kept as one call, whatever it
contains), and the graph is cut at that call into three graph modules that share the user's
submodules and parameters (nothing is copied or changed, no hook is registered; each is a plain
function of its inputs, so threads may share them):

- ``g``: ``x -> activations`` (the graph up to ``target_layer``);
- ``h``: ``activations -> outputs`` (the rest, replayed on given activations);
- ``with_activations``: ``x -> (outputs, activations)`` in one pass, for gradients of the
  outputs w.r.t. the activations (``torch.autograd.grad(outputs, activations)``).

Requirements: the model must be traceable by ``torch.fx`` (no Python control flow on tensor
values; shapes read as ``x.shape`` are fine), and ``target_layer`` must be called exactly once.
``h`` further needs a layer that every path from the input to the output goes through (a whole
residual block, a transformer block, the end of a feature extractor): a skip connection around
``target_layer`` makes the output depend on the input other than through the activations, and
``h`` is refused with a ``ValueError``. ``with_activations`` has no such requirement.
``nn.Sequential`` models are split by :func:`~.modules.split_sequential` instead (an index
works there too).
"""
from __future__ import annotations

from typing import Any

from torch import fx, nn


class _LeafTracer(fx.Tracer):
    """The default tracer, with ``target_layer`` kept as one ``call_module`` node."""

    def __init__(self, leaf: str):
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.leaf or super().is_leaf_module(module, qualified_name)


def layer_name(model: nn.Module, target_layer: Any) -> str:
    """The dotted name of ``target_layer`` (a submodule or its name) in ``model``."""
    names = {id(module): name for name, module in model.named_modules()}
    if isinstance(target_layer, nn.Module):
        name = names.get(id(target_layer))
        if not name:
            raise ValueError(f"target_layer {type(target_layer).__name__} is not a submodule "
                             f"of the model")
        return name
    if not isinstance(target_layer, str) or target_layer not in set(names.values()) - {""}:
        examples = [name for name in names.values() if name][:8]
        raise ValueError(f"target_layer must be a submodule of the model or its dotted name "
                         f"(e.g. {examples}); got {target_layer!r}")
    return target_layer


class LayerSplit:
    """``model`` cut at ``target_layer`` (a submodule or dotted name); see the module docstring.

    Attributes: ``g``, ``with_activations`` (``fx.GraphModule``), ``name`` (dotted name),
    ``h`` (a property: raises ``ValueError`` when a skip connection crosses the cut).
    """

    def __init__(self, model: nn.Module, target_layer: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"splitting at a layer needs a torch.nn.Module; got "
                            f"{type(model).__name__}")
        self.name = layer_name(model, target_layer)
        try:
            graph = _LeafTracer(self.name).trace(model)
        except Exception as error:  # fx raises several types; all mean "not traceable"
            raise ValueError(
                f"cannot split {type(model).__name__} at {self.name!r}: torch.fx cannot trace "
                f"it ({type(error).__name__}: {error}). Pass the two parts yourself "
                f"(g: input -> activations, h: activations -> outputs).") from error
        calls = [node for node in graph.nodes
                 if node.op == "call_module" and node.target == self.name]
        if len(calls) != 1:
            raise ValueError(f"target_layer {self.name!r} must be called exactly once in "
                             f"forward; it is called {len(calls)} times")
        self._model, self._graph, self._node = model, graph, calls[0]
        self.g = self._module(self._cut_after())
        self.with_activations = self._module(self._both())

    @property
    def h(self) -> fx.GraphModule:
        if not hasattr(self, "_h"):
            self._h = self._rest()
        return self._h

    def _module(self, graph: fx.Graph) -> fx.GraphModule:
        module = fx.GraphModule(self._model, graph, class_name=type(self._model).__name__)
        module.graph.eliminate_dead_code()
        module.graph.lint()
        module.recompile()
        return module

    def _copy(self, until_output: bool, replace_target: bool) -> tuple[fx.Graph, dict, Any]:
        graph, env = fx.Graph(), {}
        activations = graph.placeholder("activations") if replace_target else None
        output = None
        for node in self._graph.nodes:
            if node.op == "output":
                output = node
                break
            if node is self._node and replace_target:
                env[node] = activations
            else:
                env[node] = graph.node_copy(node, lambda n: env[n])
            if node is self._node and not until_output:
                break
        return graph, env, output

    def _cut_after(self) -> fx.Graph:
        graph, env, _ = self._copy(until_output=False, replace_target=False)
        graph.output(env[self._node])
        return graph

    def _both(self) -> fx.Graph:
        graph, env, output = self._copy(until_output=True, replace_target=False)
        result = fx.graph.map_arg(output.args[0], lambda n: env[n])
        graph.output((result, env[self._node]))
        return graph

    def _rest(self) -> fx.GraphModule:
        graph, env, output = self._copy(until_output=True, replace_target=True)
        graph.output(fx.graph.map_arg(output.args[0], lambda n: env[n]))
        module = self._module(graph)
        graph = module.graph
        inputs = [node for node in graph.nodes if node.op == "placeholder"
                  and node.name != "activations"]
        needed = [node.name for node in inputs if node.users]
        if needed:
            raise ValueError(
                f"the output of {type(self._model).__name__} depends on {needed} other than "
                f"through {self._node.target!r} (a skip connection around it); split at a "
                f"layer every path goes through, e.g. a whole residual or transformer block")
        for node in inputs:  # unused inputs of the model are dropped: h(activations)
            graph.erase_node(node)
        module.recompile()
        return module


def split_model(model: nn.Module, target_layer: Any) -> tuple[nn.Module, nn.Module]:
    """``(g, h)`` for any traceable model (see :class:`LayerSplit`)."""
    split = LayerSplit(model, target_layer)
    return split.g, split.h

