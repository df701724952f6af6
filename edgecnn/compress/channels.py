"""Channel pruning: remove whole channels and rebuild a smaller dense model, so latency drops.

Magnitude pruning leaves zeros inside dense kernels, which TFLite's int8 kernels still
multiply. Removing channels makes every tensor and kernel smaller. tfmot has no channel
pruning for Keras (its request #732 is open since 2021), so edgecnn does it on the model's
functional graph:

A *channel group* is a 1x1 Conv2D (the producer) whose output reaches exactly one Conv2D
or Dense (the consumer) through layers that act on each channel alone: BatchNormalization,
ReLU/Activation, ZeroPadding2D, Dropout, GlobalAveragePooling2D and DepthwiseConv2D with
depth multiplier 1. Its width is free: nothing else (no residual Add, no Concatenate) sees
those channels. In MobileNetV2 these are the expansion convolution of every inverted
residual block (expand -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 -> project) and the wide
1x1 head (Conv_1 -> BN -> ReLU6 -> pooling -> dropout -> logits); a new student's layers of
the same kinds are found the same way.

Channels are ranked by the L1 norm of the producer's kernel for that output channel
(Li et al., 2017, "Pruning Filters for Efficient ConvNets", arXiv:1608.08710), or by
|gamma| of the BatchNorm right after it (Liu et al., 2017, "Network Slimming",
arXiv:1708.06519); the lowest ``ratio`` are removed, the kept count rounded to a multiple
of 8 (what vectorized int8 kernels process at once). Producers under 16 channels are left
alone (MIN_CHANNELS). Weights of kept channels are copied into the slim model, which is
then fine-tuned with distillation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgecnn._tf import keras
from edgecnn.errors import RecipeError

# Layers that transform each channel on its own (the channel count passes through).
_PER_CHANNEL = ("BatchNormalization", "ReLU", "Activation", "ZeroPadding2D", "Dropout", "GlobalAveragePooling2D",
                "DepthwiseConv2D")
_CONSUMERS = ("Conv2D", "Dense")
# Narrower outputs are left alone: in MobileNets they are the linear bottlenecks, whose few
# channels carry everything between blocks (block 0's 8-channel projection at alpha 0.35).
MIN_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels that can be removed together.

    Attributes:
        producer: the 1x1 Conv2D whose output channels these are.
        path: the per-channel layers between producer and consumer, in order.
        consumer: the Conv2D or Dense that reads them as its input channels.
        channels: how many there are now.
    """

    producer: str
    path: tuple[str, ...]
    consumer: str
    channels: int


def _consumers(model) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            inbound = node.inbound_layers
            for parent in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
                out[parent.name].append(layer.name)
    return out


def find_channel_groups(model) -> list[ChannelGroup]:
    """Every channel group of ``model`` (see the module docstring), in model order."""
    consumers = _consumers(model)
    groups = []
    for layer in model.layers:
        if type(layer).__name__ != "Conv2D" or tuple(layer.kernel_size) != (1, 1) or layer.groups != 1:
            continue
        path, current = [], layer.name
        while len(consumers[current]) == 1:
            nxt = model.get_layer(consumers[current][0])
            kind = type(nxt).__name__
            if kind == "DepthwiseConv2D" and nxt.depth_multiplier != 1:
                break
            if kind in _PER_CHANNEL:
                path.append(nxt.name)
                current = nxt.name
                continue
            if kind in _CONSUMERS and getattr(nxt, "groups", 1) == 1 and layer.filters >= MIN_CHANNELS:
                groups.append(ChannelGroup(layer.name, tuple(path), nxt.name, int(layer.filters)))
            break
    return groups


def channel_scores(model, group: ChannelGroup, criterion: str = "l1") -> np.ndarray:
    """Importance of each channel of ``group``: L1 norm of the producer's kernel, or |BN gamma|."""
    if criterion == "bn_gamma":
        for name in group.path:
            layer = model.get_layer(name)
            if type(layer).__name__ == "BatchNormalization" and layer.scale:
                return np.abs(layer.gamma.numpy())
        raise RecipeError(f"prune.criterion bn_gamma: no BatchNormalization with a scale after "
                          f"'{group.producer}'; use criterion: l1")
    kernel = model.get_layer(group.producer).kernel.numpy()
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def kept_count(channels: int, ratio: float, multiple: int = 8) -> int:
    """Channels left after removing ``ratio`` of ``channels``, rounded to a multiple of ``multiple``
    (never below one multiple, nor above what there is)."""
    keep = channels * (1.0 - ratio)
    if channels < 2 * multiple:
        return max(1, int(round(keep)))
    return int(min(channels, max(multiple, multiple * round(keep / multiple))))


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


def prune_channels(model, ratio: float, criterion: str = "l1", groups: list[ChannelGroup] | None = None):
    """A new, slimmer model: ``ratio`` of each group's channels removed, kept weights copied.

    Args:
        model: a plain functional tf_keras model.
        ratio: fraction of channels to remove, in (0, 1).
        criterion: ``l1`` (kernel L1 norm) or ``bn_gamma``.
        groups: the groups to prune (default: all of :func:`find_channel_groups`).

    Returns:
        ``(slim model, {producer: (channels before, channels after)})``.

    Raises:
        RecipeError: the model has no channel group.
    """
    K = keras()
    groups = find_channel_groups(model) if groups is None else groups
    if not groups:
        raise RecipeError("prune.method channels: the student has no 1x1 convolution whose channels can be "
                          "removed (none reaches a Conv2D/Dense through per-channel layers only)")
    # A layer can be one group's consumer and another's producer: every slice applies.
    slices: dict[str, list[tuple[np.ndarray, str]]] = {}
    widths = {}
    for group in groups:
        scores = channel_scores(model, group, criterion)
        n = kept_count(group.channels, ratio)
        keep = np.sort(np.argsort(-scores, kind="stable")[:n])
        widths[group.producer] = (group.channels, n)
        slices.setdefault(group.producer, []).append((keep, "producer"))
        for name in group.path:
            slices.setdefault(name, []).append((keep, "path"))
        slices.setdefault(group.consumer, []).append((keep, "consumer"))
    config = model.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] in widths:
            layer["config"]["filters"] = widths[layer["config"]["name"]][1]
    slim = K.Model.from_config(config)
    for layer in slim.layers:
        original = model.get_layer(layer.name)
        weights = original.get_weights()
        for keep, role in slices.get(layer.name, ()) if weights else ():
            weights = _slice(original, weights, keep, role)
        if weights:
            layer.set_weights(weights)
    return slim, widths
