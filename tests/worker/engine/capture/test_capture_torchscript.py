"""The TorchScript front end on scripted and traced modules, checked against hooks / manual math."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import WIDTH, activation_net, close, np_batch, reference, save_script
from torch import nn

from worker.engine.capture.loader import model_inputs, open_model
from worker.engine.capture.record import OP_NAME
from worker.engine.capture.torchscript_graph import expose, find_activations, inlined_graph
from worker.engine.errors import AnalysisError


@pytest.mark.parametrize("traced", [False, True], ids=["scripted", "traced"])
def test_every_activation_kind_matches_torch(traced: bool, x: torch.Tensor, tmp_path: Path) -> None:
    net, expected_ops = activation_net()
    path = save_script(net, [x[:2]] if traced else None, tmp_path / "net.pt")
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    output, pre, post = reference(net, [x])

    result = model.capture(np_batch(x=x))

    assert [layer.op_type for layer in model.layers] == expected_ops
    assert [layer.name for layer in model.layers][:3] == ["net.1:relu", "net.3:leaky_relu", "net.5:prelu"]
    for k, layer in enumerate(model.layers):
        assert result.pre[k].shape == (7, WIDTH) and result.pre[k].dtype == torch.float32
        assert close(result.pre[k], pre[k]), f"pre of {layer.name}"
        assert close(result.post[k], post[k]), f"post of {layer.name}"
    assert close(result.outputs, output) and close(model.infer(np_batch(x=x)), output)
    assert next(layer for layer in model.layers if layer.op_type == "clip").default_breakpoints == (-2.0, 3.0)
    assert model.runtime == f"torch.jit {torch.__version__} cpu" and model.format == "torchscript"


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.fc2 = nn.Linear(WIDTH, 3)
        self.use_relu = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.use_relu:  # noqa: SIM108 (an if block in the scripted graph is the point)
            h = F.relu(h)
        else:
            h = torch.tanh(h)
        return torch.sigmoid(self.fc2(h))


def test_functional_relu_inside_an_if_block(x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Branchy().eval()
    model = open_model(save_script(net, None, tmp_path / "net.pt"), device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type) for layer in model.layers] == [
        ("aten::relu#0", "relu"),
        ("aten::sigmoid#0", "sigmoid"),
    ], "the tanh of the branch not taken never runs and is left out"
    hidden = net.fc(x).detach()
    assert close(result.pre[0], hidden) and close(result.post[0], hidden.relu())
    logits = net.fc2(hidden.relu()).detach()
    assert close(result.pre[1], logits) and close(result.post[1], torch.sigmoid(logits))


def test_top_level_activations_leave_as_graph_outputs_and_block_ones_through_record() -> None:
    script = torch.jit.script(_Branchy().eval())
    graph = inlined_graph(script)
    candidates = find_activations(graph)

    exposure = expose(graph, candidates, model_id=0, flags=[(False, False)] * len(candidates))

    assert [c.op for c in candidates] == ["relu", "tanh", "sigmoid"]
    assert exposure.outputs == [None, None, None, None, 0, 1] and exposure.extra == 2
    records = list(graph.findAllNodes(OP_NAME, True))
    assert len(records) == 4 and all(node.owningBlock() != graph.block() for node in records)
    (returned,) = graph.outputs()
    assert returned.node().kind() == "prim::TupleConstruct" and returned.node().inputsSize() == 3


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(x))
        g = self.fc2(h)
        s = torch.sigmoid(g)
        g.relu_()
        h.add_(1.0)
        return s + g + h


@pytest.mark.parametrize("traced", [False, True], ids=["scripted", "traced"])
def test_in_place_activations_capture_the_true_pre_activation(
    traced: bool, x: torch.Tensor, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    net = _InPlace().eval()
    path = save_script(net, [x[:2]] if traced else None, tmp_path / "net.pt")
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    z1 = net.fc(x).detach()
    z2 = net.fc2(z1.relu()).detach()
    assert [layer.op_type for layer in model.layers] == ["relu", "sigmoid", "relu"]
    assert (z1 < 0).any() and close(result.pre[0], z1), "pre of relu_ must not be overwritten"
    assert close(result.post[0], z1.relu()), "post of relu_ must not see the later h.add_(1)"
    assert close(result.pre[1], z2), "pre of sigmoid must not see the later g.relu_()"
    assert close(result.post[1], torch.sigmoid(z2))
    assert close(result.pre[2], z2) and close(result.post[2], z2.relu())
    assert close(result.outputs, net(x.clone()).detach())


class _Looped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = torch.tanh(self.fc(x))
        return x


def test_activation_in_a_loop_stacks_its_runs(x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Looped().eval()
    model = open_model(save_script(net, None, tmp_path / "net.pt"), device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    assert [(layer.op_type, layer.shape) for layer in model.layers] == [("tanh", (3, WIDTH))]
    runs = []
    h = x
    for _ in range(3):
        runs.append(net.fc(h).detach())
        h = torch.tanh(runs[-1])
    assert close(result.pre[0], torch.cat(runs, dim=1))


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU())
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        h = self.block(x)
        return torch.tanh(self.fc(h)) * scale + F.silu(h) + F.silu(h * 2)


def test_names_from_module_paths_and_defaults_left_out(x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Nested().eval()
    path = save_script(net, None, tmp_path / "net.pt")
    assert [(spec.name, spec.shape) for spec in model_inputs(path)] == [("x", ())]

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    assert [layer.name for layer in model.layers] == [
        "block.1:gelu",
        "aten::tanh#0",
        "aten::silu#0",
        "aten::silu#1",
    ]
    assert model.inputs[0].shape == (None, WIDTH)
    _, pre, _ = reference(net, [x], [net.block[1]])
    result = model.capture({"x": x})
    assert close(result.pre[0], pre[0]) and close(result.outputs, net(x).detach())


def test_layer_selection(x: torch.Tensor, tmp_path: Path) -> None:
    net, _ = activation_net()
    path = save_script(net, None, tmp_path / "net.pt")

    model = open_model(path, device="cpu", layer_names=["net.7:elu", "net.1:relu"], example=np_batch(x=x[:2]))

    assert [layer.name for layer in model.layers] == ["net.1:relu", "net.7:elu"]
    _, pre, post = reference(net, [x], [net.net[1], net.net[7]])
    result = model.capture(np_batch(x=x))
    assert all(close(a, b) for a, b in zip(result.pre + result.post, pre + post, strict=True))

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", layer_names=["net.1:tanh"], example=np_batch(x=x[:2]))
    assert caught.value.code == "unknown_layer" and "net.1:relu" in caught.value.message


def test_model_without_activations(x: torch.Tensor, tmp_path: Path) -> None:
    path = save_script(nn.Sequential(nn.Linear(WIDTH, 2)), None, tmp_path / "lin.pt")

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(input=x[:2]))

    assert caught.value.code == "no_activation_layers"


def test_wrong_input_shape(x: torch.Tensor, tmp_path: Path) -> None:
    net, _ = activation_net()
    path = save_script(net, None, tmp_path / "net.pt")

    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example={"x": torch.zeros(2, WIDTH + 2).numpy()})
    assert caught.value.code == "dataset_shape_mismatch" and "'x'" in caught.value.message
    assert f"[2, {WIDTH + 2}]" in caught.value.message

    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))
    with pytest.raises(AnalysisError) as later:
        model.capture({"x": torch.zeros(3, WIDTH + 2)})
    assert later.value.code == "dataset_shape_mismatch"


def test_torch_tensor_batches(x: torch.Tensor, tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(WIDTH, 4), nn.Softplus()).eval()
    model = open_model(
        save_script(net, [x[:2]], tmp_path / "net.pt"), device="cpu", example=np_batch(input=x[:2])
    )

    result = model.capture({"input": x.double()})

    _, pre, post = reference(net, [x])
    assert close(result.pre[0], pre[0]) and close(result.post[0], post[0])


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, 2)
        self.gate = nn.Parameter(torch.tensor([0.5, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) * torch.sigmoid(self.gate)


def test_activation_of_weights_is_not_a_layer_even_when_its_size_is_the_batch(
    x: torch.Tensor, tmp_path: Path
) -> None:
    model = open_model(
        save_script(_Gated().eval(), None, tmp_path / "net.pt"), device="cpu", example=np_batch(x=x[:2])
    )

    assert [layer.name for layer in model.layers] == ["aten::relu#0"]
    assert model.capture(np_batch(x=x)).pre[0].shape == (7, 2)


def test_a_trace_with_a_batch_of_one_baked_in_runs_one_sample_at_a_time(
    x: torch.Tensor, tmp_path: Path
) -> None:
    """Traced on one sample, ``view(1, -1)`` fixes the batch: discovery's two samples and any
    batch size still work, one sample per run."""

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(WIDTH, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)).view(1, 4)

    torch.manual_seed(0)
    net = Fixed().eval()
    path = save_script(net, [x[:1]], tmp_path / "fixed.pt")
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    with torch.no_grad():
        hidden = net.fc(x)
    assert [layer.name for layer in model.layers] == ["aten::relu#0"]
    assert close(result.pre[0], hidden) and close(result.post[0], hidden.relu())
    assert close(result.outputs, hidden.relu()) and close(model.infer(np_batch(x=x)), hidden.relu())
