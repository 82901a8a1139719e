"""2. Against the tools a user would pick instead: capturing the pre-activations (the input of every
ReLU) of the same eager PyTorch model on the same batch with TorchLens, Captum's
``LayerActivation`` and plain forward hooks, against neuronscope's TorchScript capture of the
traced model (which records the pre- *and* post-activations). Ratio = tool time / neuronscope time;
above 1× neuronscope is faster."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial

import torch
from torch import nn

from benchmarks.context import Context
from benchmarks.models import INPUT, Network, activation_modules
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import Timings, compare

SECTION = "2"
BASELINE = "neuronscope"
ONNX_PATH = "neuronscope (ONNX export)"
HOOKS = "forward hooks (register_forward_hook)"
Capture = Callable[[torch.Tensor], list[torch.Tensor]]


def _hooks(module: nn.Module, layers: list[nn.Module]) -> tuple[Capture, ExitStack]:
    """One ``register_forward_hook`` per ReLU keeping its input; the hooks stay for every call."""
    captured: list[torch.Tensor] = []
    stack = ExitStack()

    def keep(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured.append(inputs[0].detach())

    for layer in layers:
        stack.callback(layer.register_forward_hook(keep).remove)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        captured.clear()
        with torch.no_grad():
            module(x)
        return list(captured)

    return run, stack


def _captum(module: nn.Module, layers: list[nn.Module], *, one_per_layer: bool) -> Capture:
    from captum.attr import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        LayerActivation,
    )

    if one_per_layer:
        each = [LayerActivation(module, layer) for layer in layers]

        def run_each(x: torch.Tensor) -> list[torch.Tensor]:
            return [_tensor(la.attribute(x, attribute_to_layer_input=True)) for la in each]

        return run_each
    together = LayerActivation(module, layers)

    def run_together(x: torch.Tensor) -> list[torch.Tensor]:
        values = together.attribute(x, attribute_to_layer_input=True)
        assert isinstance(values, list)
        return [_tensor(value) for value in values]

    return run_together


def _tensor(value: object) -> torch.Tensor:
    """Captum returns a layer input as a tensor, or as a tuple of one tensor per input."""
    while isinstance(value, tuple | list):
        value = value[0]
    assert isinstance(value, torch.Tensor)
    return value


def _torchlens(module: nn.Module, producers: list[str]) -> Capture:
    """``torchlens.trace`` saving only the outputs of the modules that feed the ReLUs (TorchLens 2's
    spelling of ``log_forward_pass(..., layers_to_save=...)``)."""
    import torchlens
    from torchlens.options import CaptureOptions

    options = CaptureOptions(layers_to_save=producers)

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            trace = torchlens.trace(module, x, capture=options)
        return [trace[name].out for name in producers]

    return run


def _producers(module: nn.Module, x: torch.Tensor) -> list[str]:
    """Qualified names of the modules whose outputs are the ReLUs' inputs: the leaf module that
    runs just before each ReLU (true of both benchmark networks), found by running ``x`` once."""
    order: list[tuple[str, nn.Module]] = []
    with ExitStack() as stack:
        for name, sub in module.named_modules():
            if not list(sub.children()):
                hook = sub.register_forward_hook(lambda m, i, o, n=name: order.append((n, m)))
                stack.callback(hook.remove)
        with torch.no_grad():
            module(x[:2])
    return [order[k - 1][0] for k, (_, sub) in enumerate(order) if isinstance(sub, nn.ReLU) and k > 0]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for network in ctx.networks:
        rows.extend(_network_rows(ctx, network))
    return rows


def _network_rows(ctx: Context, network: Network) -> list[Row]:
    module = network.module
    layers = [layer for _, layer in activation_modules(module)]
    x = torch.from_numpy(network.batch)
    engine = network.open("torchscript")

    exported = network.open("onnx")

    def ours(batch: torch.Tensor) -> list[torch.Tensor]:
        return engine.capture({INPUT: batch.numpy()}).pre

    def ours_onnx(batch: torch.Tensor) -> list[torch.Tensor]:
        return exported.capture({INPUT: batch.numpy()}).pre

    def eager(batch: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            module(batch)
        return []

    reference = [value.reshape(x.shape[0], -1) for value in ours(x)]
    label = f"{network.title}, batch {x.shape[0]}, {len(layers)} ReLU layers"
    # The same rounds for both networks: on the conv net the contenders differ by a few per cent
    # and round-to-round noise is larger than that, so 7 rounds would decide little.
    repeats = ctx.sizes.repeats
    captum = f"Captum {_version('captum')} LayerActivation"
    builders: list[tuple[str, Callable[[], Capture]]] = [
        (
            f"{captum}, one per layer ({len(layers)} forward passes)",
            partial(_captum, module, layers, one_per_layer=True),
        ),
        (
            f"{captum} over the list of layers (one pass)",
            partial(_captum, module, layers, one_per_layer=False),
        ),
    ]
    lens_name = f"TorchLens {_version('torchlens')} trace, saving only the ReLU inputs"
    results: dict[str, tuple[Timings, bool] | str] = {}
    with ExitStack() as cleanup:
        hooks, handles = _hooks(module, layers)
        cleanup.enter_context(handles)
        tools: dict[str, Capture] = {HOOKS: hooks}
        for name, builder in builders:
            try:
                tools[name] = builder()
            except ImportError as exc:
                results[name] = f"not installed ({exc.name})"
        contenders = {BASELINE: ours, "eager": eager, ONNX_PATH: ours_onnx, **tools}
        first = compare(
            {name: partial(tool, x) for name, tool in contenders.items()},
            repeats=repeats,
            warmup=ctx.sizes.warmup,
        )
        results.update({name: (first, _matches(tool(x), reference)) for name, tool in tools.items()})
        # TorchLens wraps every torch function on its first call and leaves them wrapped, which
        # would slow the tools above down: it runs after them, against neuronscope again, then is undone.
        try:
            lens = _torchlens(module, _producers(module, x))
        except ImportError as exc:
            results[lens_name] = f"not installed ({exc.name})"
        else:
            cleanup.callback(_unwrap_torchlens, module)
            matches = _matches(lens(x), reference)
            second = compare(
                {BASELINE: partial(ours, x), lens_name: partial(lens, x)},
                repeats=repeats,
                warmup=ctx.sizes.warmup,
            )
            results[lens_name] = (second, matches)
    base = first.median(BASELINE)
    rows = [
        Row(
            SECTION,
            f"plain eager forward, nothing captured / neuronscope TorchScript capture — {label}",
            first.ratio("eager", BASELINE),
            f"eager {fmt_seconds(first.median('eager'))} vs neuronscope {fmt_seconds(base)}",
            note="reference: the floor any hook-based tool starts from",
        )
    ]
    rows.append(
        Row(
            SECTION,
            f"forward hooks / neuronscope's ONNX Runtime capture of the model's ONNX export — {label}",
            first.ratio(HOOKS, ONNX_PATH),
            f"{fmt_seconds(first.median(HOOKS))} vs {fmt_seconds(first.median(ONNX_PATH))}",
            note="another runtime: what a user gains by uploading the ONNX export instead",
        )
    )
    for name in [HOOKS, *(n for n, _ in builders), lens_name]:
        result = results[name]
        if isinstance(result, str):
            rows.append(Row(SECTION, f"{name} / neuronscope — {label}", None, result, "> 1×"))
            continue
        timings, matches = result
        ratio = timings.ratio(name, BASELINE)
        rows.append(
            Row(
                SECTION,
                f"{name} / neuronscope — {label}",
                ratio,
                f"{fmt_seconds(timings.median(name))} vs neuronscope {fmt_seconds(timings.median(BASELINE))}",
                "> 1×",
                ratio > 1.0,
                note="" if matches else "values differ from neuronscope's!",
            )
        )
    return rows


def _unwrap_torchlens(module: nn.Module) -> None:
    """Undo what ``torchlens.trace`` left behind: its wrappers around torch and on the model."""
    import torchlens
    from torchlens.backends.torch.wrappers import unwrap_torch

    unwrap_torch()
    torchlens.release_model(module)


def _matches(values: list[torch.Tensor], reference: list[torch.Tensor]) -> bool:
    if len(values) != len(reference):
        return False
    return all(
        torch.allclose(v.reshape(r.shape), r, atol=1e-4, rtol=1e-4)
        for v, r in zip(values, reference, strict=True)
    )
