"""9. Real architectures: torchvision's resnet18, mobilenet_v2, efficientnet_b0, densenet121,
convnext_tiny and a small ViT, and a small BERT from ``transformers`` (random weights, nothing
downloaded), each exported to ONNX, TorchScript and ``.pt2``; per model and format:

- ``capture`` ÷ ``infer`` on one batch (16 × 3 × 64 × 64 for the vision models);
- the engine's whole capture pass (``capture_dataset``: capture, region indices, pattern store,
  layer health) ÷ plain inference over the same batches;
- the engine's load (``open_model``: load, layer discovery on a 2-sample example) ÷ the runtime's own
  load plus its first inference of the same example.

A model whose library is missing gets a "not installed" row, one whose export fails an "export
failed" row; neither stops the run.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.context import Context, infer_all
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import compare
from neuronscope.contracts.config import AnalysisConfig
from worker.engine.analysis import capture_dataset, plan_layers
from worker.engine.capture.base import CaptureModel
from worker.engine.capture.loader import open_model
from worker.engine.inputs import BoundInputs

SECTION = "9"
CAPTURE_TARGET, ENGINE_TARGET, LOAD_TARGET = 1.25, 1.5, 2.0
FORMATS = ("onnx", "torchscript", "pt2")
RUNTIMES = {"onnx": "ONNX Runtime", "torchscript": "TorchScript", "pt2": ".pt2 (torch.export)"}
VIT_TITLE = "ViT (torchvision VisionTransformer, image 64, patch 8, 4 layers, 4 heads, hidden 128, MLP 256)"
BERT_TITLE = "BERT (transformers, 2 layers, hidden 128, 2 heads, intermediate 512, vocabulary 1,000)"


@dataclass(frozen=True)
class ArchSizes:
    models: tuple[str, ...]
    batch: int
    image: int
    seq: int
    repeats: int
    load_repeats: int
    dataset_batches: int
    warmup: int


PRESETS = {
    "full": ArchSizes(
        ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "convnext_tiny", "vit", "bert"),
        batch=16, image=64, seq=32, repeats=9, load_repeats=3, dataset_batches=4, warmup=2,
    ),
    "quick": ArchSizes(
        ("resnet18", "mobilenet_v2", "efficientnet_b0", "vit", "bert"),
        batch=16, image=64, seq=32, repeats=5, load_repeats=1, dataset_batches=2, warmup=1,
    ),
    "smoke": ArchSizes(
        ("resnet18",), batch=2, image=32, seq=8, repeats=1, load_repeats=1, dataset_batches=1, warmup=0
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Built:
    """One architecture: the eager module (``None`` when its library is missing, ``missing`` then
    says which) and one batch of inputs keyed by the exports' input names."""

    label: str
    title: str
    module: nn.Module | None
    feed: dict[str, np.ndarray]
    missing: str = ""


#: Where torchvision is installed for this benchmark only (``pip install --no-deps --target``): in the
#: test environment it would break ``transformers`` (see pyproject.toml, the ``bench`` extra).
BENCH_PACKAGES = Path(__file__).resolve().parents[1] / ".bench-packages"


def import_torchvision_models() -> Any:
    """``torchvision.models``, or ``None`` when torchvision is not installed (in the environment or
    in ``BENCH_PACKAGES``, which is appended to ``sys.path``).

    BENCHMARK-ONLY WORKAROUND: the torchvision wheel installed with ``--no-deps`` next to the CPU
    torch carries a C extension built for another torch, which does not load; ``import torchvision``
    then fails while registering fake kernels for its detection ops (``torchvision::nms``). The model
    builders do not use those ops, so the two registration modules are replaced by empty ones before
    the import. Never do this in product code.
    """
    if BENCH_PACKAGES.is_dir() and str(BENCH_PACKAGES) not in sys.path:
        sys.path.append(str(BENCH_PACKAGES))
    try:
        return importlib.import_module("torchvision.models")
    except ImportError:
        return None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in list(sys.modules):
        if name == "torchvision" or name.startswith("torchvision."):
            del sys.modules[name]
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    return importlib.import_module("torchvision.models")


class _BertLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.m(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits


def build(label: str, sizes: ArchSizes) -> Built:
    """The eager module of ``label`` with random weights (seed 0) and its input batch (seed 1)."""
    torch.manual_seed(0)
    generator = np.random.default_rng(1)
    if label == "bert":
        import_torchvision_models()  # transformers imports torchvision when it is installed
        try:
            transformers = importlib.import_module("transformers")
        except ImportError:
            return Built(label, BERT_TITLE, None, {}, "transformers")
        config = transformers.BertConfig(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=512,
            max_position_embeddings=max(64, sizes.seq),
            num_labels=3,
        )
        ids = generator.integers(1, 1000, (sizes.batch, sizes.seq), dtype=np.int64)
        mask = np.ones_like(ids)
        module = _BertLogits(transformers.BertForSequenceClassification(config))
        return Built(label, BERT_TITLE, module.eval(), {"input_ids": ids, "attention_mask": mask})
    models = import_torchvision_models()
    title = VIT_TITLE if label == "vit" else label
    if models is None:
        return Built(label, title, None, {}, "torchvision")
    if label == "vit":
        module = models.vision_transformer.VisionTransformer(
            image_size=sizes.image, patch_size=8, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256
        )
    else:
        module = getattr(models, label)(weights=None)
    images = generator.standard_normal((sizes.batch, 3, sizes.image, sizes.image), dtype=np.float32)
    return Built(label, title, module.eval(), {"x": images})


def export(built: Built, fmt: str, directory: Path) -> Path:
    """Save ``built``'s module as ``fmt`` (dynamic batch for ONNX and ``.pt2``) under ``directory``."""
    assert built.module is not None
    names = list(built.feed)
    example = tuple(torch.from_numpy(array[:2]) for array in built.feed.values())
    path = directory / f"{built.label}.{ {'onnx': 'onnx', 'torchscript': 'pt', 'pt2': 'pt2'}[fmt] }"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            if fmt == "onnx":
                torch.onnx.export(
                    built.module,
                    example,
                    str(path),
                    dynamo=False,
                    input_names=names,
                    output_names=["logits"],
                    dynamic_axes={**{name: {0: "batch"} for name in names}, "logits": {0: "batch"}},
                )
            elif fmt == "torchscript":
                trace: Any = torch.jit.trace
                with torch.no_grad():
                    traced = trace(built.module, example, strict=False)
                torch.jit.save(traced, str(path))
            else:
                batch = torch.export.Dim("batch", min=1, max=1024)
                program = torch.export.export(
                    built.module, example, dynamic_shapes=tuple({0: batch} for _ in names)
                )
                torch.export.save(program, str(path))
        finally:
            logging.disable(logging.NOTSET)
    return path


def runtime_load(fmt: str, path: Path, example: dict[str, np.ndarray]) -> Callable[[], object]:
    """The runtime's own load of ``path`` plus its first inference of ``example``, nothing else."""
    tensors = [torch.from_numpy(array) for array in example.values()]

    def onnx() -> object:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, example)

    def script() -> object:
        load: Any = torch.jit.load
        module = load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(*tensors)

    def pt2() -> object:
        module = torch.export.load(str(path)).module()
        with torch.no_grad():
            return module(*tensors)

    return {"onnx": onnx, "torchscript": script, "pt2": pt2}[fmt]


def run(ctx: Context) -> list[Row]:
    sizes = PRESETS.get(ctx.sizes.name, PRESETS["quick"])
    directory = ctx.scratch / "architectures"
    directory.mkdir(exist_ok=True)
    rows: list[Row] = []
    for label in sizes.models:
        built = build(label, sizes)
        if built.module is None:
            rows.append(Row(SECTION, f"{built.title}: not installed ({built.missing})", None, "—"))
            continue
        for fmt in FORMATS:
            try:
                rows.extend(_rows(built, fmt, directory, sizes))
            except Exception as exc:  # a model the engine fails on is a finding, not a crash
                where = f"{built.title}, {RUNTIMES[fmt]}"
                rows.append(Row(SECTION, f"{where}: FAILED", None, f"{type(exc).__name__}: {str(exc)[:160]}"))
    return rows


def _rows(built: Built, fmt: str, directory: Path, sizes: ArchSizes) -> list[Row]:
    where = f"{built.title}, {RUNTIMES[fmt]}, batch {sizes.batch}"
    try:
        path = export(built, fmt, directory)
    except Exception as exc:
        return [Row(SECTION, f"{where}: export failed", None, f"{type(exc).__name__}: {str(exc)[:120]}")]
    example = {name: array[:2] for name, array in built.feed.items()}
    load = compare(
        {
            "runtime": runtime_load(fmt, path, example),
            "engine": lambda: open_model(path, device="cpu", example=example),
        },
        repeats=sizes.load_repeats,
        warmup=0,
    )
    model = open_model(path, device="cpu", example=example)
    neurons = sum(layer.neurons for layer in model.layers)
    timings = compare(
        {"infer": partial(model.infer, built.feed), "capture": partial(model.capture, built.feed)},
        repeats=sizes.repeats,
        warmup=sizes.warmup,
    )
    engine = _engine_pass(model, built, sizes)
    capture, whole, loaded = (
        timings.ratio("capture", "infer"),
        engine.ratio("engine", "infer"),
        load.ratio("engine", "runtime"),
    )
    return [
        Row(
            SECTION,
            f"capture / infer — {where}, {len(model.layers)} layers, {neurons:,} neurons/sample",
            capture,
            f"capture {fmt_seconds(timings.median('capture'))} vs infer "
            f"{fmt_seconds(timings.median('infer'))} per batch",
            f"≤ {CAPTURE_TARGET}×",
            capture <= CAPTURE_TARGET,
        ),
        Row(
            SECTION,
            f"engine capture pass / plain inference — {where}, {sizes.dataset_batches} batches",
            whole,
            f"engine {fmt_seconds(engine.median('engine'))} vs infer {fmt_seconds(engine.median('infer'))}",
            f"≤ {ENGINE_TARGET}×",
            whole <= ENGINE_TARGET,
        ),
        Row(
            SECTION,
            f"load (open_model) / the runtime's own load + first inference — {where}",
            loaded,
            f"engine {fmt_seconds(load.median('engine'))} vs runtime {fmt_seconds(load.median('runtime'))}",
            f"≤ {LOAD_TARGET}×",
            loaded <= LOAD_TARGET,
        ),
    ]


def _engine_pass(model: CaptureModel, built: Built, sizes: ArchSizes) -> Any:
    repeated = {name: np.concatenate([array] * sizes.dataset_batches) for name, array in built.feed.items()}
    data = BoundInputs(arrays=repeated, samples=sizes.batch * sizes.dataset_batches)
    config = AnalysisConfig.model_validate(
        {"batch_size": sizes.batch, "device": "cpu", "transition_density": None}
    )
    plans = plan_layers(model, config)
    return compare(
        {
            "infer": lambda: infer_all(model, data, sizes.batch),
            "engine": lambda: capture_dataset(model, data, plans, config, lambda stage, fraction: None),
        },
        repeats=max(1, sizes.repeats // 2),
        warmup=min(1, sizes.warmup),
    )
