"""2. Against the tools a user would pick instead: capturing the pre-activations (the input of every
ReLU) of the same eager PyTorch model on the same batch with TorchLens, Captum's
``LayerActivation`` and plain forward hooks, against neuronscope's TorchScript capture of the
traced model (which records the pre- *and* post-activations). Ratio = tool time / neuronscope time;
above 1× neuronscope is faster."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from contextlib import ExitStack

import torch
from torch import nn

from benchmarks.context import Context
from benchmarks.models import INPUT, Network, activation_modules
from benchmarks.report import Row, fmt_seconds
from benchmarks.timing import Timings, compare

SECTION = "2"
BASELINE = "neuronscope"
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
    from captum.attr import LayerActivation

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
    ours: Capture = lambda batch: engine.capture({INPUT: batch.numpy()}).pre  # noqa: E731
    reference = [value.reshape(x.shape[0], -1) for value in ours(x)]
    label = f"{network.title}, batch {x.shape[0]}, {len(layers)} ReLU layers"
    rows: list[Row] = []
    with ExitStack() as cleanup:
        hooks, handles = _hooks(module, layers)
        cleanup.enter_context(handles)
        tools: dict[str, Capture | str] = {"forward hooks (register_forward_hook)": hooks}
        for name, builder in (
            (
                f"Captum {_version('captum')} LayerActivation, one per layer "
                f"({len(layers)} forward passes)",
                lambda: _captum(module, layers, one_per_layer=True),
            ),
            (
                f"Captum {_version('captum')} LayerActivation over the list of layers (one pass)",
                lambda: _captum(module, layers, one_per_layer=False),
            ),
            (
                f"TorchLens {_version('torchlens')} trace, saving only the ReLU inputs",
                lambda: _torchlens(module, _producers(module, x)),
            ),
        ):
            try:
                tools[name] = builder()
            except ImportError as exc:
                tools[name] = f"not installed ({exc.name})"
        runnable = {name: tool for name, tool in tools.items() if not isinstance(tool, str)}
        checks = {name: _matches(tool(x), reference) for name, tool in runnable.items()}

        def eager() -> None:
            with torch.inference_mode():
                module(x)

        repeats = ctx.sizes.repeats if network.label == "fcnn" else ctx.sizes.slow_repeats
        # TorchLens wraps every torch function on its first call and leaves them wrapped, which
        # would slow the other tools down: it is timed on its own against neuronscope, then undone.
        lens = [name for name in runnable if name.startswith("TorchLens")]
        timings: dict[str, Timings] = {}
        plain: dict[str, Callable[[], object]] = {BASELINE: lambda: ours(x), "eager": eager}
        plain.update({name: (lambda t=tool: t(x)) for name, tool in runnable.items() if name not in lens})
        first = compare(plain, repeats=repeats, warmup=ctx.sizes.warmup)
        timings.update({name: first for name in plain})
        if lens:
            cleanup.callback(_unwrap_torchlens, module)
            second = compare(
                {BASELINE: lambda: ours(x), lens[0]: lambda: runnable[lens[0]](x)},
                repeats=repeats,
                warmup=ctx.sizes.warmup,
            )
            timings[lens[0]] = second
        base = first.median(BASELINE)
        rows.append(
            Row(
                SECTION,
                f"plain eager forward, nothing captured / neuronscope TorchScript capture — {label}",
                first.ratio("eager", BASELINE),
                f"eager {fmt_seconds(first.median('eager'))} vs neuronscope {fmt_seconds(base)}",
                note="reference: the floor any hook-based tool starts from",
            )
        )
        for name, tool in tools.items():
            if isinstance(tool, str):
                rows.append(Row(SECTION, f"{name} / neuronscope — {label}", None, tool, "> 1×"))
                continue
            ratio = timings[name].ratio(name, BASELINE)
            rows.append(
                Row(
                    SECTION,
                    f"{name} / neuronscope — {label}",
                    ratio,
                    f"{fmt_seconds(timings[name].median(name))} vs neuronscope "
                    f"{fmt_seconds(timings[name].median(BASELINE))}",
                    "> 1×",
                    ratio > 1.0,
                    note="" if checks[name] else "values differ from neuronscope's!",
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
