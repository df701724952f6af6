"""Magnitude and M:N pruning with tensorflow-model-optimization: wrap, fine-tune, strip.

tfmot's ``prune_low_magnitude`` wraps a layer so that, every ``frequency`` steps between
the schedule's begin and end, the smallest-magnitude weights of its kernel are masked to
zero (Zhu & Gupta, 2017, arXiv:1710.01878); ``strip_pruning`` removes the wrappers and
leaves plain layers whose kernels hold the zeros. With ``sparsity_m_by_n=(M, N)`` the
mask keeps the N - M largest of every N consecutive weights along the *input-channel*
axis (tfmot transposes the kernel so input channels are last), the pattern sparse
tensor cores and some NPUs accelerate.

Which layers: tfmot prunes Conv2D and Dense kernels but never depthwise ones (its
registry maps ``DepthwiseConv2D`` to no weights). edgecnn also leaves the first layer
(the stem sees only the image's 1-3 channels: every weight carries signal) and the last
(the classifier: each of its weights feeds a logit) dense by default, and under M:N
every layer whose input channels N does not divide (a 3-channel stem cannot hold 2:4).

Everything here returns a new model; the student handed in is never changed.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch

from edgecnn._tf import keras
from edgecnn.errors import RecipeError

# Layer classes whose kernels tfmot prunes (its prune registry), by class name so that
# models loaded from files (same classes) and built in-process are treated alike.
PRUNABLE_CLASSES = ("Conv2D", "Dense")


@dataclasses.dataclass(frozen=True)
class LayerChoice:
    """Which layers a pruning run touches.

    Attributes:
        pruned: names of the layers to wrap, in model order.
        kept: layer name -> why it stays dense (first, last, depthwise, excluded, M:N).
    """

    pruned: tuple[str, ...]
    kept: dict[str, str]


def _kernel_input_channels(layer) -> int:
    kernel = layer.kernel
    return int(kernel.shape[-2])  # Conv2D (h, w, in, out), Dense (in, out)


def check_globs(model, cfg) -> None:
    """Each ``prune.include``/``exclude`` glob matches a layer of ``model``.

    Raises:
        RecipeError: naming the pattern and the closest layer names.
    """
    names = [layer.name for layer in model.layers]
    for key in ("include", "exclude"):
        for pattern in getattr(cfg, key):
            if not fnmatch.filter(names, pattern):
                close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.4)
                hint = f"close layer names: {', '.join(close)}" if close else \
                    f"layers are named like {', '.join(names[1:4])}"
                raise RecipeError(f"prune.{key}: pattern '{pattern}' matches no layer of the student; {hint}")


def choose_layers(model, cfg) -> LayerChoice:
    """The layers of ``model`` that ``cfg`` (a PruneConfig) prunes, and why the others stay dense.

    Raises:
        RecipeError: an ``include`` or ``exclude`` pattern matches no layer (naming it and
            the closest layer names), or nothing is left to prune.
    """
    layers = list(model.layers)
    check_globs(model, cfg)
    kernels = [layer for layer in layers if type(layer).__name__ in PRUNABLE_CLASSES]
    kept: dict[str, str] = {}
    for layer in layers:
        if type(layer).__name__ == "DepthwiseConv2D":
            kept[layer.name] = "depthwise (tfmot cannot prune it)"
    chosen = []
    for i, layer in enumerate(kernels):
        name = layer.name
        if cfg.keep_first_last and i == 0:
            kept[name] = "first layer (prune.keep_first_last)"
        elif cfg.keep_first_last and i == len(kernels) - 1:
            kept[name] = "last layer (prune.keep_first_last)"
        elif not any(fnmatch.fnmatchcase(name, p) for p in cfg.include):
            kept[name] = "not in prune.include"
        elif any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            kept[name] = "in prune.exclude"
        elif cfg.m_by_n is not None and _kernel_input_channels(layer) % cfg.m_by_n[1]:
            kept[name] = (f"{_kernel_input_channels(layer)} input channels, not a multiple of "
                          f"N={cfg.m_by_n[1]} (prune.m_by_n)")
        else:
            chosen.append(name)
    if not chosen:
        raise RecipeError("prune: no layer is left to prune (" + "; ".join(f"{k}: {v}" for k, v in kept.items())[:300]
                          + "); widen prune.include or narrow prune.exclude")
    return LayerChoice(tuple(chosen), kept)


def make_schedule(cfg, total_steps: int):
    """The tfmot pruning schedule of ``cfg`` over a fine-tune of ``total_steps`` optimizer steps.

    ``begin``/``end`` are fractions of the fine-tune; the end step is at least one step
    after the begin step and at most the last step, so the target is reached in training.
    """
    import tensorflow_model_optimization as tfmot

    begin = int(cfg.begin * total_steps)
    end = min(max(begin + 1, int(round(cfg.end * total_steps))), max(begin + 1, total_steps - 1))
    frequency = max(1, min(cfg.frequency, end - begin))
    if cfg.schedule.kind == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(cfg.sparsity, begin_step=begin, end_step=end, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(cfg.schedule.initial_sparsity, cfg.sparsity, begin_step=begin,
                                                end_step=end, power=cfg.schedule.power, frequency=frequency)


def wrap_for_pruning(model, cfg, total_steps: int, choice: LayerChoice | None = None):
    """A copy of ``model`` with the chosen layers wrapped by ``prune_low_magnitude`` (weights copied)."""
    import tensorflow_model_optimization as tfmot

    choice = choice or choose_layers(model, cfg)
    schedule = make_schedule(cfg, total_steps)
    chosen = set(choice.pruned)
    options = {"sparsity_m_by_n": tuple(cfg.m_by_n)} if cfg.m_by_n is not None else {}

    def clone(layer):
        fresh = layer.__class__.from_config(layer.get_config())  # never wrap the caller's layer
        if layer.name in chosen:
            return tfmot.sparsity.keras.prune_low_magnitude(fresh, pruning_schedule=schedule, **options)
        return fresh

    wrapped = keras().models.clone_model(model, clone_function=clone)
    source = {layer.name: layer for layer in model.layers}
    for layer in wrapped.layers:
        # A wrapper's own variables (mask, threshold, step) keep tfmot's initial values.
        target = layer.layer if type(layer).__name__ == "PruneLowMagnitude" else layer
        if target.name in source and source[target.name].weights:
            target.set_weights(source[target.name].get_weights())
    return wrapped


def update_step_callback():
    """tfmot's ``UpdatePruningStep``, which advances the masks during training (required)."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.UpdatePruningStep()


def strip(model):
    """The plain model under the pruning wrappers, kernels holding their zeros (tfmot ``strip_pruning``)."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_sparsity(model, names) -> dict[str, float]:
    """Fraction of exact zeros in each named layer's kernel (masks excluded: read the weights)."""
    import numpy as np

    out = {}
    for layer in model.layers:
        if layer.name in names:
            kernel = np.asarray(layer.kernel.numpy())
            out[layer.name] = round(float((kernel == 0).mean()), 5)
    return out


def count_nonzero_params(model) -> int:
    """Parameters that are not exactly zero (what a sparse format or gzip pays for)."""
    import numpy as np

    return int(sum(int(np.count_nonzero(w)) for w in model.get_weights()))
