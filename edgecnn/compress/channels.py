"""Channel pruning: remove whole channels and rebuild a smaller dense model, so latency drops.

Magnitude pruning leaves zeros inside dense kernels, which TFLite's int8 kernels still
multiply. Removing channels makes every tensor and kernel smaller. tfmot has no channel
pruning for Keras (its request #732 is open since 2021), so edgecnn does it on the model's
functional graph.

A *channel group* is a set of channels that must be removed together. It starts at the
Conv2D or Dense layers that create them (the producers) and runs through layers that act on
each channel alone (BatchNormalization, ReLU/Activation, ZeroPadding2D, Dropout, pooling,
DepthwiseConv2D with depth multiplier 1) and through element-wise merges (Add, Multiply,
...), which tie every input's channels to the output's: a residual Add makes the
projections of all blocks it joins one group. It ends at the Conv2D or Dense layers that read
the channels as input (the consumers). A group is prunable when nothing else sees its
channels: no model input or output, no Concatenate, Reshape, Flatten or layer edgecnn does
not know.

In MobileNetV2 a *free* group has one producer and no merge: the expansion convolution of
every inverted-residual block (expand -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 ->
project), the stem, the last block's projection and the wide 1x1 head (Conv_1 -> BN ->
ReLU6 -> pooling -> dropout -> logits). A *residual* group joins the projections of the
blocks of one stage through their Adds (block_1_project, block_2_project and the Add
between them, read by block_2_expand and block_3_expand). A new student's layers of the
same kinds are found the same way, with no per-model table.

Channels are ranked by the L1 norm of the producer's kernel for that output channel
(Li et al., 2017, "Pruning Filters for Efficient ConvNets", arXiv:1608.08710), or by
|gamma| of the BatchNorm right after it (Liu et al., 2017, "Network Slimming",
arXiv:1708.06519); in a group with several producers each producer's scores are divided by
their mean before they are summed, so no layer's scale dominates. The lowest ``ratio`` are
removed, the kept count rounded to a multiple of 8 (what vectorized int8 kernels process at
once). Groups under 16 channels are left alone (MIN_CHANNELS). Weights of kept channels are
copied into the slim model, which is then fine-tuned with distillation.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import numpy as np

from edgecnn._tf import keras
from edgecnn.errors import RecipeError

# Layers that transform each channel on its own (the channel count passes through).
_PER_CHANNEL = ("BatchNormalization", "ReLU", "Activation", "ZeroPadding2D", "Dropout", "GlobalAveragePooling2D",
                "AveragePooling2D", "MaxPooling2D", "GlobalMaxPooling2D", "DepthwiseConv2D")
# Element-wise merges: every input and the output share their channels.
_MERGES = ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum")
_PRODUCERS = ("Conv2D", "Dense")
# Narrower groups are left alone: in MobileNets they are the linear bottlenecks, whose few
# channels carry everything between blocks (block 0's 8-channel projection at alpha 0.35).
MIN_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that are removed together.

    Attributes:
        producers: the Conv2D/Dense layers whose output channels these are (several when a
            merge ties them, as residual Adds do).
        path: the per-channel layers and merges the channels pass through, in model order.
        consumers: the Conv2D/Dense layers that read them as input channels.
        channels: how many there are now.
    """

    producers: tuple[str, ...]
    path: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: int

    @property
    def producer(self) -> str:
        """The first producer, which names the group in reports."""
        return self.producers[0]

    @property
    def residual(self) -> bool:
        """Whether a merge ties several layers' channels together (a residual chain)."""
        return len(self.producers) > 1


def _parents(layer) -> list[str]:
    names = []
    for node in layer._inbound_nodes:
        inbound = node.inbound_layers
        names += [p.name for p in (inbound if isinstance(inbound, (list, tuple)) else [inbound])]
    return names


def _kind(layer) -> str:
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
        return "other"
    if kind in _PRODUCERS and getattr(layer, "groups", 1) == 1:
        return "producer"
    if kind == "Activation" and getattr(layer.activation, "__name__", "") in ("softmax", "log_softmax"):
        return "other"  # mixes the channels it normalizes over
    if kind in _PER_CHANNEL:
        return "per_channel"
    if kind in _MERGES:
        return "merge"
    return "other"


def find_channel_groups(model, residual: bool = True) -> list[ChannelGroup]:
    """Every prunable channel group of ``model`` (see the module docstring), in model order.

    Args:
        model: a functional tf_keras model.
        residual: include groups tied by merges (residual chains); False keeps to groups with
            one producer and no merge, the free widths.
    """
    # Union-find over layers: two layers are joined when their outputs carry the same channels.
    root = {layer.name: layer.name for layer in model.layers}

    def find(name: str) -> str:
        while root[name] != name:
            root[name] = root[root[name]]
            name = root[name]
        return name

    blocked: set[str] = set()  # layers whose output channels something else depends on
    readers: dict[str, list[str]] = {}  # layer -> producers that read its output as input channels
    for layer in model.layers:
        kind, parents = _kind(layer), _parents(layer)
        if kind in ("per_channel", "merge"):
            for parent in parents:
                root[find(parent)] = find(layer.name)
        elif kind == "producer":
            for parent in parents:
                readers.setdefault(parent, []).append(layer.name)
        else:  # an input, an unknown layer, a reshape or concatenation: its inputs and output stay whole
            blocked.update([*parents, layer.name])
    blocked.update(t._keras_history.layer.name for t in model.outputs)

    members: dict[str, list] = {}
    for layer in model.layers:
        members.setdefault(find(layer.name), []).append(layer)
    groups = []
    for layers in members.values():
        names = {layer.name for layer in layers}
        origins = [layer for layer in layers if _kind(layer) == "producer"]
        consumers = sorted({c for name in names for c in readers.get(name, ())},
                           key=[layer.name for layer in model.layers].index)
        path = tuple(layer.name for layer in layers if _kind(layer) != "producer")
        has_merge = any(_kind(layer) == "merge" for layer in layers)
        # A group holding the input or an unknown layer has a width fixed from outside
        # (those are blocked); one that no producer creates or no layer reads is not a group.
        if names & blocked or not origins or not consumers:
            continue
        width = int(origins[0].filters if type(origins[0]).__name__ == "Conv2D" else origins[0].units)
        if width < MIN_CHANNELS or (has_merge and not residual):
            continue
        groups.append(ChannelGroup(tuple(o.name for o in origins), path, tuple(consumers), width))
    order = [layer.name for layer in model.layers]
    return sorted(groups, key=lambda g: order.index(g.producer))


def choose_groups(model, cfg) -> list[ChannelGroup]:
    """The groups ``cfg`` (a PruneConfig with ``method: channels``) prunes: every group of
    :func:`find_channel_groups` (``cfg.residual``: with residual chains) whose producers all
    match ``cfg.include`` and none matches ``cfg.exclude``.

    Raises:
        RecipeError: a glob matches no layer, or no group is left (naming why).
    """
    from edgecnn.compress.prune import check_globs

    check_globs(model, cfg)
    found = find_channel_groups(model, residual=cfg.residual)

    def matches(name: str, patterns) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    chosen = [g for g in found if all(matches(n, cfg.include) for n in g.producers)
              and not any(matches(n, cfg.exclude) for n in g.producers)]
    if not found:
        raise RecipeError("prune.method channels: the student has no convolution whose channels can be removed "
                          "(none reaches a Conv2D/Dense through per-channel layers and merges only); "
                          "use method: magnitude")
    if not chosen:
        raise RecipeError(f"prune.include/exclude leave none of the student's {len(found)} channel groups "
                          f"(named by their first layer: {', '.join(g.producer for g in found[:4])}, ...); "
                          "widen prune.include or narrow prune.exclude")
    return chosen


def channel_scores(model, group: ChannelGroup, criterion: str = "l1") -> np.ndarray:
    """Importance of each channel of ``group``: L1 norm of the producers' kernels, or |BN gamma|.

    With several producers (or BatchNorms) each one's scores are divided by their mean and
    then summed, so a layer with larger weights does not decide alone.
    """
    def normalized(values: list[np.ndarray]) -> np.ndarray:
        return np.sum([v / max(float(v.mean()), 1e-12) for v in values], axis=0) if len(values) > 1 else values[0]

    if criterion == "bn_gamma":
        gammas = [np.abs(layer.gamma.numpy()) for layer in map(model.get_layer, group.path)
                  if type(layer).__name__ == "BatchNormalization" and layer.scale]
        if not gammas:
            raise RecipeError(f"prune.criterion bn_gamma: no BatchNormalization with a scale after "
                              f"'{group.producer}'; use criterion: l1")
        return normalized(gammas)
    kernels = [model.get_layer(name).kernel.numpy() for name in group.producers]
    return normalized([np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0) for k in kernels])


def kept_count(channels: int, ratio: float, multiple: int = 8) -> int:
    """Channels left after removing ``ratio`` of ``channels``, rounded to the nearest multiple of
    ``multiple``, halves up (40 at ratio 0.5 keeps 24, not 16: removing less than asked costs
    speed, removing more costs accuracy), never below one multiple, nor above what there is."""
    keep = channels * (1.0 - ratio)
    if channels < 2 * multiple:
        return max(1, int(math.floor(keep + 0.5)))
    return int(min(channels, max(multiple, multiple * math.floor(keep / multiple + 0.5))))


def _slice(layer, weights: list[np.ndarray], keep: np.ndarray, role: str) -> list[np.ndarray]:
    kind = type(layer).__name__
    if role == "producer":  # kernel [..., out], bias [out]
        return [w[..., keep] for w in weights]
    if role == "consumer":  # Conv2D kernel [h, w, in, out] / Dense kernel [in, out]; bias unchanged
        kernel = weights[0][:, :, keep, :] if kind == "Conv2D" else weights[0][keep, :]
        return [kernel, *weights[1:]]
    if kind == "DepthwiseConv2D":  # depthwise kernel [h, w, C, 1], bias [C]
        return [weights[0][:, :, keep, :], *[w[keep] for w in weights[1:]]]
    return [w[keep] for w in weights]  # BatchNormalization: gamma, beta, mean, variance


def prune_channels(model, ratio: float, criterion: str = "l1", groups: list[ChannelGroup] | None = None,
                   residual: bool = True):
    """A new, slimmer model: ``ratio`` of each group's channels removed, kept weights copied.

    Args:
        model: a plain functional tf_keras model.
        ratio: fraction of channels to remove, in (0, 1).
        criterion: ``l1`` (kernel L1 norm) or ``bn_gamma``.
        groups: the groups to prune (default: all of :func:`find_channel_groups`).
        residual: with ``groups`` None, include the groups tied by residual merges.

    Returns:
        ``(slim model, {producer: (channels before, channels after)})``.

    Raises:
        RecipeError: the model has no channel group.
    """
    K = keras()
    groups = find_channel_groups(model, residual=residual) if groups is None else groups
    if not groups:
        raise RecipeError("prune.method channels: the student has no convolution whose channels can be "
                          "removed (none reaches a Conv2D/Dense through per-channel layers and merges only)")
    # A layer can be one group's consumer and another's producer: every slice applies.
    slices: dict[str, list[tuple[np.ndarray, str]]] = {}
    widths = {}
    for group in groups:
        scores = channel_scores(model, group, criterion)
        n = kept_count(group.channels, ratio)
        keep = np.sort(np.argsort(-scores, kind="stable")[:n])
        for name in group.producers:
            widths[name] = (group.channels, n)
            slices.setdefault(name, []).append((keep, "producer"))
        for name in group.path:
            slices.setdefault(name, []).append((keep, "path"))
        for name in group.consumers:
            slices.setdefault(name, []).append((keep, "consumer"))
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] in widths:
            key = "filters" if "filters" in layer["config"] else "units"
            layer["config"][key] = widths[layer["config"]["name"]][1]
    slim = K.Model.from_config(config)
    for layer in slim.layers:
        original = model.get_layer(layer.name)
        weights = original.get_weights()
        for keep, role in slices.get(layer.name, ()) if weights else ():
            weights = _slice(original, weights, keep, role)
        if weights:
            layer.set_weights(weights)
    return slim, widths
