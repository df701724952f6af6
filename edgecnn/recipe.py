"""The typed recipe: pydantic models, loading with ``extends:``, ``--set`` overrides, schema.

Override order, lowest first: field defaults < ``extends:`` chain < recipe file < ``--set``.
Every default lives on a field below, with the one-line description that also feeds
``edgecnn schema``. This module never imports TensorFlow.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, field_validator,
                      model_validator)

from edgecnn.errors import RecipeError
from edgecnn.fileio import json_type_name


class _Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(kind: str, name: str) -> None:
    """Registry check as a ValueError, so pydantic reports it with the key path."""
    from edgecnn.models.registry import check_student_name, check_teacher_name

    try:
        (check_student_name if kind == "student" else check_teacher_name)(name)
    except RecipeError as exc:
        raise ValueError(str(exc).split("; ", 1)[-1].join(["unknown architecture; ", ""])) from None


# --------------------------------------------------------------------------- data


class Normalization(_Section):
    """``x_model = (pixel - mean) / std`` per channel, pixels in [0, 255]."""

    mean: list[float] = Field([127.5], description="Per-channel mean subtracted from 0..255 pixels (one value = all channels).")
    std: list[float] = Field([127.5], description="Per-channel divisor applied after the mean (one value = all channels).")

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: list[float]) -> list[float]:
        if not v or any(s <= 0 for s in v):
            raise ValueError("every std value must be > 0")
        return v

    @field_validator("mean")
    @classmethod
    def _mean_present(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one mean value")
        return v


class Augment(_Section):
    """Light training-time augmentation (never applied to validation, test or calibration data)."""

    horizontal_flip: bool = Field(True, description="Randomly mirror training images left-right.")
    translate: float = Field(0.1, ge=0.0, le=0.5, description="Random shift as a fraction of the image side (0 = off).")


class DataConfig(_Section):
    """Where images come from and how they become model inputs."""

    source: Literal["fashion_mnist", "image_folder"] = Field("fashion_mnist", description="Dataset kind: the Fashion-MNIST IDX files, or one sub-folder per class of jpg/png images.")
    path: Optional[Path] = Field(None, description="fashion_mnist: folder with the IDX .gz files (searched first). image_folder: the root folder (required).")
    image_size: int = Field(32, ge=32, le=512, description="Model input height and width in pixels (MobileNet needs >= 32).")
    channels: Literal[1, 3] = Field(3, description="Model input channels; grayscale is repeated to RGB when 3.")
    normalization: Normalization = Field(default_factory=Normalization, description="Input normalization, recorded with every model.")
    augment: Augment = Field(default_factory=Augment, description="Training-time augmentation.")
    train_limit: Optional[int] = Field(None, ge=10, description="Use a class-stratified subset of this many training images (None = all).")
    # ge: edgecnn.data.dataset.MIN_TEST_IMAGES (a literal here, so `validate` needs no numpy; a test keeps them equal)
    test_limit: Optional[int] = Field(None, ge=20, description="Use a class-stratified subset of this many test images (None = all; at least 20, so one image is at most 5 points of accuracy).")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Fraction of the training images held out for validation.")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5, description="image_folder without a test/ folder: fraction of images held out for test.")
    representative_samples: int = Field(256, ge=1, le=10000, description="Training images (un-augmented) used to calibrate int8 quantization.")

    @model_validator(mode="after")
    def _folder_needs_path(self) -> "DataConfig":
        if self.source == "image_folder" and self.path is None:
            raise ValueError("data.source 'image_folder' needs data.path: the folder with one sub-folder per class")
        for name in ("mean", "std"):
            values = getattr(self.normalization, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"normalization.{name} has {len(values)} values; give 1 or {self.channels} (data.channels)")
        return self


# --------------------------------------------------------------------------- training


class TrainConfig(_Section):
    """How one model is trained."""

    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(128, ge=1, le=8192, description="Images per optimizer step.")
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Optimizer (sgd uses Nesterov momentum 0.9).")
    schedule: Literal["constant", "cosine"] = Field("cosine", description="Learning-rate schedule over all steps.")
    weight_decay: float = Field(0.0, ge=0.0, le=0.1, description="Decoupled weight decay (AdamW / SGDW); 0 = off.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing for the hard-label loss.")
    augment: Optional[bool] = Field(
        None,
        description="Train on images augmented by data.augment. Unset: the stage decides: training from scratch "
        "(teacher, student) augments; fine-tuning (prune, qat) does not, since a few low-learning-rate epochs on "
        "shifted images fit them instead of the test distribution (measured: +1.4 points for a 3-epoch 50 % prune "
        "fine-tune on Fashion-MNIST, tools/bench_finetune_ablation.py).",
    )
    distribute: Literal["default", "mirrored", "multi_worker"] = Field(
        "default",
        description="tf.distribute strategy: default (one device), mirrored (all local GPUs), "
        "multi_worker (MultiWorkerMirroredStrategy, cluster from the TF_CONFIG environment variable).",
    )
    distribute_timeout_s: float = Field(
        120.0, gt=0.0, le=3600.0,
        description="multi_worker: seconds to wait for every worker in TF_CONFIG to answer before failing.",
    )


class TeacherConfig(_Section):
    """The large model whose soft targets train the student."""

    path: Optional[Path] = Field(None, description="Load this saved Keras model (.keras/.h5/SavedModel dir) instead of training one.")
    trust_code: bool = Field(
        False,
        description="Run the Python code the teacher file carries (Lambda layers, custom classes), Keras' "
        "safe_mode=False. Off: such a file is refused before loading. Turn on only for files you trust.",
    )
    architecture: str = Field("vgg_small", description="A registered teacher (see `edgecnn list`) or any keras.applications name such as ResNet50.")
    weights: Optional[str] = Field(None, description="keras.applications backbones: None (random), 'imagenet' (downloaded when online), or a local weights file.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10), description="Teacher training (skipped when `path` is given).")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str, info) -> str:
        if info.data.get("path") is None:  # a loaded teacher file brings its own architecture
            _check_name("teacher", v)
        return v


class StudentConfig(_Section):
    """The small model that ships to the device."""

    architecture: str = Field("mobilenet_v2", description="A registered student (see `edgecnn list`).")
    alpha: float = Field(0.35, gt=0.0, le=2.0, description="Width multiplier (MobileNet alpha).")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the classifier.")
    weights: Optional[str] = Field(None, description="None (random), 'imagenet' (downloaded when online), or a local backbone weights file.")
    output_stride: Literal[8, 16, 32] = Field(
        32,
        description="Input size / final feature-map size. 32 is the ImageNet design; 16 or 8 drop the last "
        "one or two downsamplings so small inputs (32-64 px) keep a 2x2 or 4x4 map instead of 1x1 (more accurate, slower).",
    )

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, v: str) -> str:
        _check_name("student", v)
        return v


class DistillConfig(_Section):
    """Soft-target knowledge distillation (Hinton et al., 2015, arXiv:1503.02531)."""

    enabled: bool = Field(True, description="Train the student on the teacher's soft targets; False = hard labels only.")
    # The registered distillation losses (edgecnn.compress.losses, needs_teacher); a test
    # keeps this list and the registry equal, so the recipe validates without TensorFlow.
    loss: Literal["soft_kd"] = Field("soft_kd", description="Distillation loss (registered in edgecnn.compress.losses): soft_kd = Hinton's soft targets. Also used by every fine-tuning stage (prune) when there is a teacher.")
    temperature: float = Field(4.0, gt=0.0, le=100.0, description="Softmax temperature T for soft targets; the soft loss is scaled by T^2.")
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="Weight of the soft (KL) loss; 1 - alpha weights the hard-label loss.")
    teacher_outputs: Literal["online", "cached"] = Field("online", description="online: teacher runs on every augmented batch; cached: teacher logits computed once on un-augmented images (about 2x faster on CPU).")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=10), description="Student training.")


# --------------------------------------------------------------------------- prune


class ConstantSparsity(_Section):
    """Prune to the target sparsity at once at ``begin``, then keep the masks while fine-tuning.

    tfmot ``ConstantSparsity``: the mask is recomputed every ``frequency`` steps from
    ``begin`` to ``end``.
    """

    kind: Literal["constant"] = Field("constant", description="Schedule kind.")


class PolynomialDecaySparsity(_Section):
    """Raise sparsity from ``initial_sparsity`` to the target between ``begin`` and ``end``.

    tfmot ``PolynomialDecay`` (Zhu & Gupta, 2017, arXiv:1710.01878):
    ``s(t) = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0)) ** power``.
    """

    kind: Literal["polynomial_decay"] = Field("polynomial_decay", description="Schedule kind.")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="Sparsity at `begin`.")
    power: float = Field(3.0, gt=0.0, le=10.0, description="Exponent of the decay (3 = cubic, as in the paper).")


class PruneConfig(_Section):
    """Magnitude pruning of the student (tfmot prune_low_magnitude), fine-tuned with distillation.

    Pruned by default: every Conv2D and Dense kernel except the first layer (its few input
    channels carry all the image), the last (the classifier: every logit counts) and
    depthwise kernels (tfmot has no pruning for them, and at 9 weights a channel they are a
    small share of a MobileNet). ``include``/``exclude`` change that by layer-name globs.
    """

    method: Literal["magnitude", "channels"] = Field("magnitude", description="magnitude: zero the smallest weights (a smaller gzip; latency only on XNNPACK's sparse float path). channels: remove whole channels (MobileNetV2 expansions, stem, head and residual chains) for a smaller, faster dense model.")
    ratio: Optional[float] = Field(None, gt=0.0, lt=1.0, description="method channels: fraction of each prunable layer's channels to remove (kept count rounded to a multiple of 8).")
    criterion: Literal["l1", "bn_gamma"] = Field("l1", description="method channels: rank channels by the L1 norm of their kernel or by |gamma| of the BatchNorm after it.")
    residual: bool = Field(True, description="method channels: also remove channels that residual Adds tie together (each MobileNetV2 stage's projections, pruned as one group); false prunes free widths only (expansions, stem, head).")
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Target fraction of zero weights in each pruned kernel.")
    schedule: Union[ConstantSparsity, PolynomialDecaySparsity] = Field(
        default_factory=PolynomialDecaySparsity, discriminator="kind",
        description="How sparsity rises over the fine-tune: {kind: constant} or {kind: polynomial_decay, initial_sparsity, power}.")
    begin: float = Field(0.0, ge=0.0, lt=1.0, description="When pruning starts, as a fraction of the fine-tune's steps.")
    end: float = Field(0.7, gt=0.0, le=1.0, description="When the target is reached and masks stop changing, as a fraction of the fine-tune's steps.")
    frequency: int = Field(10, ge=1, le=100000, description="Steps between mask updates.")
    m_by_n: Optional[tuple[int, int]] = Field(None, description="Structured M:N sparsity, e.g. [2, 4]: at least M zeros in every block of N weights along input channels (layers whose input channels N does not divide stay dense). Sets the sparsity to M/N.")
    include: list[str] = Field(default_factory=lambda: ["*"], description="Globs over layer names: only matching Conv2D/Dense layers are pruned.")
    exclude: list[str] = Field(default_factory=list, description="Globs over layer names never pruned (besides first, last and depthwise).")
    keep_first_last: bool = Field(True, description="Never prune the first and the last prunable layer.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2, learning_rate=5e-4),
                               description="Fine-tuning while pruning (distilled from the teacher when there is one).")

    @field_validator("schedule", mode="before")
    @classmethod
    def _kind_alone(cls, v: Any) -> Any:
        # `schedule: constant` is short for `schedule: {kind: constant}`.
        return {"kind": v} if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _sparsity_of_m_by_n(cls, data: Any) -> Any:
        # M:N fixes the sparsity at M/N: filled in here (the model is frozen afterwards).
        pair = data.get("m_by_n") if isinstance(data, dict) else None
        if pair is None:
            return data
        try:
            # The field's own conversion ("2" -> 2, 4.0 -> 4), so a pair written that way gets
            # its sparsity too; what it refuses is left to the field's message.
            pair = TypeAdapter(tuple[int, int]).validate_python(pair)
        except ValidationError:
            return data
        # An impossible pair (M >= N, N > 64) is left to _consistent, whose message says what a pair needs
        # (a `sparsity: null` that only made way for the pair would otherwise be reported first).
        if not 1 <= pair[0] < pair[1] <= 64:
            return {key: value for key, value in data.items() if not (key == "sparsity" and value is None)}
        m, n = pair
        given = data.get("sparsity")
        if given is not None:
            try:
                given = TypeAdapter(float).validate_python(given)
            except ValidationError:
                return data  # the field says what is wrong with it
            if abs(given - m / n) > 1e-9:
                raise ValueError(f"prune.m_by_n {list(pair)} sets the sparsity to {m / n:g}; "
                                 f"remove prune.sparsity ({given:g}) or make it {m / n:g} "
                                 "(or set prune.m_by_n: null for unstructured pruning)")
        return {**data, "sparsity": m / n}

    @model_validator(mode="after")
    def _consistent(self) -> "PruneConfig":
        if self.method == "channels":
            if self.ratio is None:
                raise ValueError("prune.method channels needs prune.ratio, the fraction of channels to remove "
                                 "(e.g. 0.5)")
            if self.m_by_n is not None:
                raise ValueError("prune.m_by_n is for method magnitude; channel pruning removes whole channels")
        elif self.ratio is not None:
            raise ValueError("prune.ratio is for method channels; magnitude pruning takes prune.sparsity")
        else:
            for key in ("criterion", "residual"):
                # Set to other than its default: a resolved recipe (a run's manifest.json, which
                # `edgecnn bundle` re-validates) lists every key with its default value.
                if key in self.model_fields_set and getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(f"prune.{key} is for method channels; remove it or set prune.method: channels")
        if self.end <= self.begin:
            raise ValueError(f"prune: the schedule ends (end {self.end:g}) before it begins (begin {self.begin:g}); "
                             "set end > begin (fractions of the fine-tune)")
        if isinstance(self.schedule, PolynomialDecaySparsity) and self.schedule.initial_sparsity > self.sparsity:
            raise ValueError(f"prune.schedule.initial_sparsity {self.schedule.initial_sparsity:g} is above the target "
                             f"prune.sparsity {self.sparsity:g}; lower it")
        if self.m_by_n is not None:
            m, n = self.m_by_n
            if not (1 <= m < n <= 64):
                raise ValueError(f"prune.m_by_n {list(self.m_by_n)}: need 1 <= M < N <= 64, e.g. [2, 4]")
        return self


class QatConfig(_Section):
    """Quantization-aware training (tfmot) of the distilled, possibly pruned, student.

    Fine-tuned with the recipe's distillation loss when there is a teacher. After
    ``prune``, sparsity-preserving QAT keeps the pruned zeros (tfmot's prune-preserve
    scheme, Conv2D and Dense); the zeros are read back from the final file.
    """

    keep_float: list[str] = Field(default_factory=list, description="Layer names left float (not quantization-aware), e.g. a layer tfmot cannot quantize.")
    preserve_sparsity: Optional[bool] = Field(None, description="Keep pruned zeros at zero during QAT; null = on when the model comes from `prune`.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2, learning_rate=1e-4),
                               description="Quantization-aware fine-tuning.")


# --------------------------------------------------------------------------- quantize / export / evaluate


class QuantizeConfig(_Section):
    """Full-integer post-training quantization of the student."""

    int8: bool = Field(True, description="Produce a full-integer int8 model (post-training quantization).")
    io_dtype: Literal["int8", "uint8", "float32"] = Field("int8", description="Input/output tensor type of the int8 model.")
    calibration_samples: Optional[int] = Field(None, ge=1, le=10000, description="Calibration images (None = data.representative_samples).")
    weights: Literal["per_channel", "per_tensor"] = Field("per_channel", description="Scales of the int8 weights of post-training files (quantize, gate, mixed): per_channel (one scale per output channel: robust, the default) or per_tensor (one scale per weight tensor: no per-channel float32 scales and int64 zero points, and coarser weights that deflate better; the 50 % pruned MobileNetV2-0.35 of fashion_mnist_prune_qat gzips 22 % smaller; check its accuracy in the report, or pair it with max_drop). Quantization-aware models keep the quantizers they trained with; export.formats (dynamic, int16x8, int4) stay per channel.")
    max_drop: Optional[float] = Field(None, ge=0.0, le=100.0, description="Accuracy gate, in points: when a post-training int8 model loses more than this against its float source (on the validation split), keep its worst-quantizing layers in float (litert-quantizer, int8 I/O kept) until it does not, writing <model>_int8_gated.tflite; the build fails, listing what was tried, when no attempt meets it. None = no gate.")
    mixed: dict[str, Literal["float32", "int16x8"]] = Field({}, description="Per-layer mixed precision: Keras layer-name globs of the student and the precision of their ops (float32, or int16x8: int16 activations, int8 weights); everything else is int8, I/O int8. Writes <model>_int8_mixed.tflite with litert-quantizer from the float32 file. A glob that matches no layer is an error naming close layer names.")
    gate_attempts: int = Field(8, ge=1, le=64, description="Candidates the accuracy gate tries at most: the full int8 model, then the 1, 2, ... worst layers kept float.")

    @property
    def per_channel(self) -> bool:
        """Whether post-training int8 weights get one scale per output channel (``weights``)."""
        return self.weights == "per_channel"


class ExportConfig(_Section):
    """TFLite export; see edgecnn.export.formats for the table of formats."""

    formats: list[Literal["float32", "float16", "dynamic", "int16x8", "int4", "edgetpu"]] = Field(["float32"], description="TFLite flavours to write besides the int8 model: float32, float16 (float16 weights), dynamic (int8 weights, float activations), int16x8 (int16 activations, int8 weights), int4 (int4 Conv2D/Dense weights, int8 depthwise weights, float activations; needs the quantize extra), and edgetpu (the int8 model compiled by edgetpu_compiler; skipped with the reason when the compiler is absent).")
    bundle: bool = Field(False, description="Also write a deploy bundle to <run dir>/bundle/: models, labels, golden samples, device runner (see `edgecnn bundle`).")


class EvaluateConfig(_Section):
    """Test-split evaluation of every produced model."""

    batch_size: int = Field(256, ge=1, le=8192, description="Images per batch for Keras evaluation.")
    threads: int = Field(2, ge=1, le=64, description="Interpreter threads for evaluating .tflite files.")


class BenchTarget(_Section):
    """One device the built .tflite models are benchmarked on (as `edgecnn bench` does)."""

    target: str = Field(..., description="local, ssh://user@host[:port], coral[:usb|:pci][:N] or android[:SERIAL].")
    threads: int = Field(1, ge=1, le=64, description="CPU threads for the interpreter.")
    runs: int = Field(100, ge=1, le=100000, description="Timed inferences.")
    warmup: int = Field(10, ge=0, le=10000, description="Untimed inferences before timing.")
    timeout_s: float = Field(300.0, gt=0.0, le=86400.0, description="Seconds before the benchmark on the device is killed.")
    samples: int = Field(500, ge=0, le=10000, description="Test-split images sent along for device-side accuracy (0 = timing only).")
    remote_python: str = Field("python3", min_length=1, description="ssh targets: the device's Python, a name on its PATH or a path such as ~/venv/bin/python.")
    identity: Optional[Path] = Field(None, description="ssh targets: private key file (ssh -i); default: ssh's own keys.")
    known_hosts: Optional[Path] = Field(None, description="ssh targets: known-hosts file (default ~/.ssh/known_hosts); host keys are always checked.")
    benchmark_binary: Optional[Path] = Field(None, description="android targets: TFLite benchmark_model for the phone (default /data/local/tmp/benchmark_model on it).")

    @field_validator("target")
    @classmethod
    def _known_target(cls, v: str) -> str:
        from edgecnn.targets import parse_target
        from edgecnn.errors import DeviceError

        try:
            parse_target(v)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("identity", "benchmark_binary")
    @classmethod
    def _file_exists(cls, v: Optional[Path]) -> Optional[Path]:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"'{v}' does not exist (relative paths start at the current directory); fix the path")
        return v



class Recipe(_Section):
    """A whole edgecnn build."""

    name: str = Field(..., min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$", description="Build name; the default run directory is runs/<name>.")
    seed: int = Field(0, ge=0, description="Seed for splits, initialization and augmentation.")
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset and preprocessing.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="Teacher model.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="Student model.")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Knowledge distillation.")
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig, description="Post-training int8 quantization.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Float TFLite export.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation of every model on the test split.")
    prune: Optional[PruneConfig] = Field(None, description="Magnitude or M:N pruning of the student after distillation (null = none).")
    qat: Optional[QatConfig] = Field(None, description="Quantization-aware training after distillation (and pruning); null = none.")
    bench: list[BenchTarget] = Field(default_factory=list, description="Devices to benchmark the built .tflite models on after evaluation (empty = no bench stage).")

    # Provenance, filled in by load_recipe (empty for a recipe built from data): dotted
    # key -> the extends: ancestor that set it, this recipe's file, its parent's file and
    # the parent's data.source / data.path as written. Advice only, never part of the
    # value: equality and the hashes ignore it.
    _inherited: dict[str, str] = PrivateAttr(default_factory=dict)
    _source: Optional[str] = PrivateAttr(None)
    _parent_file: Optional[str] = PrivateAttr(None)
    _parent_data: dict = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # pydantic compares private attributes too; two recipes with the same values
        # build the same thing wherever the values came from.
        if not isinstance(other, Recipe):
            return NotImplemented
        return self.__dict__ == other.__dict__

    @model_validator(mode="after")
    def _paths_exist(self) -> "Recipe":
        # Checked at load time so a typo fails in `validate`, not after an hour of training.
        checks = [("data.path", self.data.path), ("teacher.path", self.teacher.path)]
        for key, weights in (("teacher.weights", self.teacher.weights), ("student.weights", self.student.weights)):
            if weights not in (None, "imagenet"):
                checks.append((key, Path(weights)))
        for key, path in checks:
            if path is not None and not Path(path).expanduser().exists():
                raise ValueError(f"{key} '{path}' does not exist (relative paths start at the current directory); fix the path")
        if self.data.channels != 3 and "imagenet" in (self.teacher.weights, self.student.weights):
            raise ValueError("ImageNet weights need RGB input; set data.channels: 3")
        if "edgetpu" in self.export.formats and not self.quantize.int8:
            raise ValueError("export.formats: edgetpu compiles the int8 model, but quantize.int8 is false; "
                             "set quantize.int8: true or remove edgetpu")
        if "edgetpu" in self.export.formats:
            # The Edge TPU runs int8 only; int4 weights and int16 activations have no Edge TPU
            # kernels (and tflite-runtime 2.14, the runtime of Coral set-ups, refuses both files).
            other = [f for f in ("int4", "int16x8") if f in self.export.formats]
            other += ["quantize.mixed int16x8"] if "int16x8" in self.quantize.mixed.values() else []
            if other:
                raise ValueError(f"export.formats: edgetpu cannot run {' or '.join(other)} (the Edge TPU runs int8 "
                                 "only); build those in a recipe of their own, or remove edgetpu")
        if not self.quantize.per_channel and not self.quantize.int8:
            raise ValueError(f"quantize.weights {self.quantize.weights} sets the scales of the int8 model, but "
                             f"quantize.int8 is false; set quantize.int8: true or remove weights")
        if self.quantize.mixed and (not self.quantize.int8 or self.quantize.io_dtype != "int8"):
            raise ValueError("quantize.mixed writes an int8 model with int8 inputs and outputs; set quantize.int8: true "
                             "and io_dtype: int8, or remove mixed")
        if self.quantize.max_drop is not None:
            # The gate compares int8 files with their float source on held-out images, and its
            # candidates come from litert-quantizer, which writes int8 inputs and outputs.
            if not self.quantize.int8:
                raise ValueError("quantize.max_drop gates the int8 model, but quantize.int8 is false; "
                                 "set quantize.int8: true or remove max_drop")
            if self.quantize.io_dtype != "int8":
                raise ValueError(f"quantize.max_drop: the gated model keeps int8 inputs and outputs, but quantize.io_dtype "
                                 f"is {self.quantize.io_dtype}; set io_dtype: int8 or remove max_drop")
            if self.data.validation_fraction <= 0:
                raise ValueError("quantize.max_drop measures the drop on the validation split, but "
                                 "data.validation_fraction is 0; set it above 0 (e.g. 0.1)")
        return self

    @field_validator("bench", mode="before")
    @classmethod
    def _no_bench(cls, v: Any) -> Any:
        return [] if v is None else v  # `bench: null` means no targets

    def section_hash(self, *sections: str) -> str:
        """sha256 of the named sections' resolved values (the cache key material)."""
        payload = {s: _jsonable(getattr(self, s)) for s in sections}
        for section in payload.values():
            # How training is spread over devices, and how long to wait for peers, do not
            # change what is trained: a teacher trained on one machine serves a cluster build
            # (and raising the timeout after a failed start resumes, not retrains).
            train = section.get("train") if isinstance(section, dict) else None
            if isinstance(train, dict):
                train.pop("distribute", None)
                train.pop("distribute_timeout_s", None)
                if train.get("augment") is None:  # unset: keys of recipes without it stay as they were
                    train.pop("augment", None)
        quantize = payload.get("quantize")
        if isinstance(quantize, dict) and quantize.get("weights") == "per_channel":
            quantize.pop("weights")  # the default, as before the option: keys of existing recipes stay
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        """The fully resolved recipe as plain JSON-able data."""
        return _jsonable(self)

    @property
    def recipe_hash(self) -> str:
        """sha256 of the whole resolved recipe."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return json.loads(value.model_dump_json())
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- loading

# Safety limits of recipe loading, applied to every file of an ``extends:`` chain and to
# every ``--set`` value. A full recipe is about 2 KB, some 100 values, 4 levels deep and
# uses no aliases, so each limit is far above any real recipe and far below what makes
# loading slow: nested anchors ("billion laughs") expand a few hundred bytes into
# hundreds of millions of values, which ran for a minute and ended in MemoryError.
MAX_RECIPE_BYTES = 256 * 1024
"""Largest recipe file (or ``--set`` value) read, in bytes."""
MAX_YAML_ALIASES = 100
"""Most ``*alias`` references in one file."""
MAX_YAML_VALUES = 10_000
"""Most YAML values (scalars, lists, mappings) in one file, counted with every alias expanded."""
MAX_YAML_DEPTH = 32
"""Deepest nesting of lists/mappings in one file, aliases expanded."""
MAX_EXTENDS_CHAIN = 16
"""Most recipe files in one ``extends:`` chain."""


class _YamlLimitError(Exception):
    """A recipe document crossed one of the limits above (message: the limit, the fix)."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses documents over the limits above while composing.

    Composition is where aliases are resolved, so counting there stops a bomb before
    anything is expanded: every node's expanded size and height are computed from its
    children's (an alias contributes the full size of the node it names). A subclass,
    so PyYAML's global ``SafeLoader`` stays untouched for everyone else.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0
        # Values of the document so far, aliases expanded: +1 per node, + the full size
        # of an alias's target per alias. Checked as it grows, so a long flat list stops
        # at the limit instead of being composed to its end first.
        self._total = 0
        # id(node) -> (expanded size, expanded height); nodes stay alive in the tree.
        self._measure: dict[int, tuple[int, int]] = {}

    def _count(self, values: int, line: str) -> None:
        self._total += values
        if self._total > MAX_YAML_VALUES and self._aliases:
            raise _YamlLimitError(f"more than {MAX_YAML_VALUES} values (the limit) once YAML aliases are expanded{line} "
                                  "(an alias bomb?): a recipe needs a few hundred, write them out instead of nested *aliases")
        if self._total > MAX_YAML_VALUES:
            raise _YamlLimitError(f"more than {MAX_YAML_VALUES} values (the limit){line}: a recipe needs a few hundred")

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = f" at line {event.start_mark.line + 1}" if event.start_mark else ""
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _YamlLimitError(f"more than {MAX_YAML_ALIASES} YAML aliases (the limit){line}; write the values out instead of *aliases")
            node = super().compose_node(parent, index)
            if id(node) not in self._measure:
                raise _YamlLimitError(f"the alias *{event.anchor}{line} refers to the value that contains it; a recipe cannot be recursive")
            self._count(self._measure[id(node)][0], line)
            return node
        self._count(1, line)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels (the limit){line}; a recipe needs about 4")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes = [self._measure[id(child)] for child in children]
        height = 1 + max((h for _, h in sizes), default=0)
        if height > MAX_YAML_DEPTH:
            raise _YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels (the limit) once YAML aliases are expanded{line}; a recipe needs about 4")
        self._measure[id(node)] = (1 + sum(s for s, _ in sizes), height)
        return node


def _unshare(value: Any) -> Any:
    """A copy without shared sub-objects, so ``--set`` on one aliased key changes only that key."""
    if isinstance(value, dict):
        return {key: _unshare(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshare(item) for item in value]
    return value


def _safe_load_bounded(text: str) -> Any:
    """``yaml.safe_load`` within the limits above.

    Raises:
        _YamlLimitError: the text crosses a limit.
        yaml.YAMLError: the text is not YAML.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise _YamlLimitError(f"larger than {MAX_RECIPE_BYTES // 1024} KiB (the limit); a recipe is a few KB")
    loader = _BoundedLoader(text)
    try:
        return _unshare(loader.get_single_data())
    finally:
        loader.dispose()


class _Provenance:
    """Which file set each leaf value of a merged recipe (dotted key -> file), and the parent's data."""

    def __init__(self, origin: dict[str, str], parent_file: Optional[str] = None, parent_data: Optional[dict] = None) -> None:
        self.origin = origin
        self.parent_file = parent_file
        self.parent_data = parent_data or {}


def _leaves(data: dict, prefix: str = "") -> list[str]:
    """Dotted keys of the values that are not (non-empty) mappings; lists are values."""
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += _leaves(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load, merge and validate a recipe file.

    Every file of the ``extends:`` chain and every override value is read within the
    limits :data:`MAX_RECIPE_BYTES`, :data:`MAX_YAML_ALIASES`, :data:`MAX_YAML_VALUES`,
    :data:`MAX_YAML_DEPTH` (and the chain within :data:`MAX_EXTENDS_CHAIN`). The loader
    records which file set each value, for :func:`inherited_settings` and
    :func:`recipe_warnings`.

    Args:
        path: the recipe YAML file.
        overrides: ``a.b=c`` strings; values are parsed as YAML scalars/lists (never eval'd).

    Returns:
        The validated, immutable :class:`Recipe`.

    Raises:
        RecipeError: one line naming the file, the key path and the fix.
    """
    path = Path(path)
    raw, provenance = _load_with_extends(path, chain=())
    overridden = set()
    for item in overrides:
        key = _apply_override(raw, item)
        overridden.add(key)
        # A --set value is the user's own choice, not inherited; nor is anything it replaced.
        provenance.origin = {k: f for k, f in provenance.origin.items()
                             if not (k == key or k.startswith(key + ".") or key.startswith(k + "."))}
    inherited = {key: origin for key, origin in provenance.origin.items() if origin != str(path)}
    if _prefer_own_m_by_n(raw, inherited, overridden):
        inherited.pop("prune.sparsity", None)  # now M/N, this recipe's own value
    recipe = validate_recipe(raw, source=str(path), origins=inherited)
    recipe._inherited = inherited
    recipe._source = str(path)
    recipe._parent_file = provenance.parent_file
    recipe._parent_data = dict(provenance.parent_data)
    return recipe


def validate_recipe(raw: dict, source: str = "<recipe>", origins: Optional[dict[str, str]] = None) -> Recipe:
    """Validate already-merged recipe data; see :func:`load_recipe`.

    ``origins``: dotted key -> the parent file that set it, named in error messages.
    """
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(_explain(exc, source, origins)) from None


def _prefer_own_m_by_n(raw: dict, inherited: dict[str, str], overridden: set[str]) -> bool:
    """Drop ``prune.sparsity`` when it was set further away than ``prune.m_by_n``.

    M:N fixes the sparsity at M/N, so a child asking for ``[1, 4]`` under a parent's
    ``sparsity: 0.5`` (or ``--set prune.m_by_n=[1,4]`` on a file with one) means 1:4;
    refusing it would send the user to edit a file they did not mean to change.
    """
    prune = raw.get("prune")
    own = "prune.m_by_n" not in inherited
    farther = ("prune.sparsity" in inherited
               or "prune.m_by_n" in overridden and "prune.sparsity" not in overridden)
    if isinstance(prune, dict) and prune.get("m_by_n") is not None and own and farther and "sparsity" in prune:
        raw["prune"] = {key: value for key, value in prune.items() if key != "sparsity"}
        return True
    return False


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder, not a recipe file; name a .yaml file (e.g. recipes/quickstart.yaml)")
    if path.exists() and not path.is_file():
        raise RecipeError(f"{path}: not a regular file; a recipe is a .yaml file (e.g. recipes/quickstart.yaml)")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found; check the path (recipes ship in recipes/, e.g. recipes/quickstart.yaml)")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise _YamlLimitError(f"{size} bytes, larger than {MAX_RECIPE_BYTES // 1024} KiB (the limit); a recipe is a few KB")
        data = _safe_load_bounded(path.read_text(encoding="utf-8"))
    except _YamlLimitError as exc:
        raise RecipeError(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}; fix the indentation/quoting there") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file; a recipe is UTF-8 YAML") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty; start from recipes/quickstart.yaml")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: the top level must be a mapping of sections (name:, data:, ...), got {json_type_name(data)}")
    return data


def _load_with_extends(path: Path, chain: tuple[Path, ...]) -> tuple[dict, _Provenance]:
    """The merged data of ``path`` and its ``extends:`` ancestors, and which file set each value."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise RecipeError(f"{path}: 'extends' forms a cycle ({cycle}); remove one of the links")
    if len(chain) >= MAX_EXTENDS_CHAIN:
        raise RecipeError(f"{path}: refused: an 'extends' chain longer than {MAX_EXTENDS_CHAIN} files; merge some of them")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    own = {key: str(path) for key in _leaves(data)}
    if parent is None:
        return data, _Provenance(own)
    if not isinstance(parent, str):
        raise RecipeError(f"{path}: 'extends' must be a path to another recipe file, got {json_type_name(parent)}")
    parent_path = Path(parent) if Path(parent).is_absolute() else path.parent / parent
    if parent_path.is_dir():
        raise RecipeError(f"{path}: extends '{parent}', which is a folder (looked at {parent_path}); name a recipe file in it")
    if not parent_path.is_file():
        raise RecipeError(f"{path}: extends '{parent}', which does not exist (looked at {parent_path}); paths are relative to the recipe file")
    base, base_provenance = _load_with_extends(parent_path, (*chain, resolved))
    merged = deep_merge(base, data)
    # A merged leaf is this file's when this file has it, else it kept the parent's origin.
    origin = {key: own.get(key) or base_provenance.origin[key] for key in _leaves(merged)}
    base_data = base.get("data") if isinstance(base.get("data"), dict) else {}
    return merged, _Provenance(origin, str(parent_path), {k: base_data.get(k) for k in ("source", "path")})


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated by ``override``: mappings merge key by key, anything else is replaced.

    A mapping whose ``kind`` changes (a tagged union such as ``prune.schedule``) is replaced
    whole: the parent's keys of another kind (``power`` of a polynomial schedule) mean
    nothing to the new one and would be refused as unknown keys.
    """
    merged = dict(base)
    for key, value in override.items():
        if (isinstance(value, dict) and isinstance(merged.get(key), dict)
                and ("kind" not in value or value.get("kind") == merged[key].get("kind"))):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict, item: str) -> str:
    """Set one ``--set KEY.PATH=VALUE`` in ``raw``; returns the dotted key."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set distill.temperature=2")
    try:
        value = _safe_load_bounded(text) if text.strip() else None
    except _YamlLimitError as exc:
        raise RecipeError(f"--set {key.strip()!r}: value refused: {exc}") from None
    except yaml.YAMLError:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML; quote it") from None
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"--set {item!r}: '{'.'.join(parts[:i + 1])}' is not a section, cannot set a key inside it")
        node = child
    node[parts[-1]] = value
    return ".".join(parts)


# --------------------------------------------------------------------------- error messages


def _models_of(annotation: Any) -> list[type]:
    """The BaseModel classes an annotation allows (one, or the members of a union)."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _tag_of(model: type) -> Optional[str]:
    """The ``kind`` a member of a tagged union stands for (``prune.schedule``), else None."""
    field = getattr(model, "model_fields", {}).get("kind")
    return field.default if field is not None and isinstance(field.default, str) else None


def _walk(loc: tuple) -> tuple[list[str], Any]:
    """Follow a pydantic error location from :class:`Recipe`: the key path a user writes
    (list indices kept, union tags dropped: pydantic puts ``polynomial_decay`` into
    ``prune.schedule.polynomial_decay.power``) and the model reached (None past a leaf)."""
    model: Any = Recipe
    shown: list[str] = []
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        shown.append(str(part))
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        models = _models_of(field.annotation) if field is not None else []
        if len(models) > 1 and parts and any(_tag_of(m) == parts[0] for m in models):
            tag = parts.pop(0)
            model = next(m for m in models if _tag_of(m) == tag)
        else:
            model = models[0] if models else None
    return shown, model


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the model reached by following ``loc`` from :class:`Recipe`."""
    return list(getattr(_walk(loc)[1], "model_fields", {}))


def _tags_at(loc: tuple) -> list[str]:
    """The ``kind`` values of the tagged union at ``loc`` (``prune.schedule``)."""
    *parent, name = loc
    field = getattr(_walk(tuple(parent))[1], "model_fields", {}).get(name)
    return [tag for tag in map(_tag_of, _models_of(field.annotation) if field else []) if tag]


def _set_in(origins: dict[str, str], shown: list[str]) -> str:
    """`` (set in FILE)`` when a parent file set the value at ``shown``, or the list or mapping
    it sits in (``export.formats`` for ``export.formats.0``); else ""."""
    for end in range(len(shown), 0, -1):
        setter = origins.get(".".join(shown[:end]))
        if setter:
            return f" (set in {setter})"
    return ""


def _explain(exc: ValidationError, source: str, origins: Optional[dict[str, str]] = None) -> str:
    """One line: the file, then each problem (usually one) with its key path and fix, joined by "; ".

    ``origins`` (dotted key -> file, for values a parent recipe set) names that file after
    the key, so an inherited bad value is not blamed on the file that merely extends it.
    """
    origins = origins or {}
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        shown, _ = _walk(loc)
        key = ".".join(shown) or "(top level)"
        where = _set_in(origins, shown)
        kind = err["type"]
        if kind == "extra_forbidden":
            known = _fields_at(loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.7)  # 0.5 offered "prune" for "tempreature"
            fix = f"did you mean '{'.'.join([*shown[:-1], hint[0]])}'?" if hint else f"allowed here: {', '.join(known)}"
            lines.append(f"unknown key '{key}'{where}; {fix}")
        elif kind == "missing":
            lines.append(f"missing required key '{key}'; add it")
        elif kind in ("union_tag_not_found", "union_tag_invalid"):
            tags = _tags_at(loc)
            problem = (f"kind '{err['ctx']['tag']}' is not one of {', '.join(tags)}" if kind == "union_tag_invalid"
                       else f"needs a kind, one of {', '.join(tags)}")
            lines.append(f"'{key}'{where}: {problem}; e.g. {key}: {{kind: {tags[0]}}}")
        elif not loc or kind == "value_error" and isinstance(err.get("input"), dict):
            # model-level checks already name their keys in the message
            lines.append(f"{err['msg'].removeprefix('Value error, ')}")
        else:
            got = err.get("input")
            shown_value = json.dumps(got, default=str) if not isinstance(got, dict) else "a mapping"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"'{key}'{where}: {message} (got {shown_value})")
    return f"{source}: " + "; ".join(lines)


# --------------------------------------------------------------------------- schema


def recipe_schema() -> dict:
    """JSON Schema of the recipe (for editor completion), with ``extends`` allowed."""
    schema = Recipe.model_json_schema()
    schema["properties"]["extends"] = {"type": "string", "description": "Path of a recipe this one overrides (relative to this file)."}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgecnn recipe"
    return schema


# --------------------------------------------------------------------------- advice


def inherited_settings(recipe: Recipe) -> dict[str, str]:
    """Dotted recipe keys whose values came from an ``extends:`` ancestor -> that ancestor's file.

    Only values written in an ancestor file and not set again by the recipe itself or
    by ``--set`` count (field defaults are not inherited). Keys are leaves:
    ``data.augment.horizontal_flip``, ``export.formats``. Empty for a recipe that was
    not loaded with :func:`load_recipe` or that has no ``extends:``.

    Args:
        recipe: a recipe from :func:`load_recipe`.

    Returns:
        A new dict, sorted by key.
    """
    return dict(sorted(recipe._inherited.items()))


def layer_name_keys(recipe: Recipe) -> list[str]:
    """The keys of ``recipe`` that name the student's layers (checked at build start, not by validate)."""
    keys = []
    if recipe.prune is not None:
        keys += [f"prune.{key}" for key in ("include", "exclude")
                 if getattr(recipe.prune, key) != type(recipe.prune).model_fields[key].get_default(call_default_factory=True)]
    if recipe.qat is not None and recipe.qat.keep_float:
        keys.append("qat.keep_float")
    if recipe.quantize.mixed:
        keys.append("quantize.mixed")
    return keys


def _active_augmentations(recipe: Recipe) -> dict[str, Any]:
    """Inherited ``data.augment`` keys whose value turns an augmentation on -> that value."""
    augment = recipe.data.augment.model_dump()
    active = {}
    for key in inherited_settings(recipe):
        if key.startswith("data.augment."):
            field = key.removeprefix("data.augment.")
            value = augment.get(field)
            if value not in (None, False, 0, 0.0):
                active[key] = value
    return active


def recipe_warnings(recipe: Recipe) -> list[str]:
    """Advice about a valid recipe that probably does not do what its author meant.

    Today one check: the recipe switches dataset (``data.source`` or ``data.path``
    differs from its ``extends:`` parent's) but keeps augmentations it inherits from the
    parent. Augmentations fit a dataset: a horizontal flip suits clothes and ruins
    digits (a digit set built from the quickstart recipe lost 38 points to it).
    ``edgecnn validate`` and ``edgecnn build`` print each as a ``warning:`` line.

    Args:
        recipe: a recipe from :func:`load_recipe`.

    Returns:
        One-line messages; empty when nothing looks wrong.
    """
    warnings = []
    if recipe._parent_file is None:
        return warnings
    defaults = DataConfig.model_fields
    parent_source = recipe._parent_data.get("source") or defaults["source"].default
    parent_path = recipe._parent_data.get("path")
    changed = []
    if recipe.data.source != parent_source:
        changed.append(f"data.source {recipe.data.source} instead of {parent_source}")
    if _norm_path(recipe.data.path) != _norm_path(parent_path):
        theirs = f"instead of '{parent_path}'" if parent_path is not None else "where the parent sets none"
        changed.append(f"data.path '{recipe.data.path}' {theirs}" if recipe.data.path is not None
                       else f"no data.path instead of '{parent_path}'")
    active = _active_augmentations(recipe)
    if changed and active:
        origins = inherited_settings(recipe)
        by_file: dict[str, list[str]] = {}
        for key, value in active.items():
            by_file.setdefault(origins[key], []).append(f"{key}={json.dumps(value)}")
        listed = "; ".join(f"{', '.join(keys)} from {origin}" for origin, keys in by_file.items())
        off = ", ".join(f"{key.removeprefix('data.augment.')}: {json.dumps(_OFF[key])}" for key in active)
        warnings.append(
            f"{recipe._source}: switches dataset ({'; '.join(changed)}) but keeps inherited augmentations "
            f"({listed}); an augmentation that suits one dataset can ruin another (a mirrored digit is another "
            f"digit): turn them off with `data: {{augment: {{{off}}}}}` in {recipe._source}, or write the values "
            "you want to keep there")
    return warnings


# The value that turns each augmentation off, for the advice above.
_OFF = {f"data.augment.{name}": (False if field.annotation is bool else 0) for name, field in Augment.model_fields.items()}


def _norm_path(value: Any) -> Optional[str]:
    return None if value is None else os.path.normpath(os.path.expanduser(str(value)))
