"""The ``.pt2`` (torch.export) front end, checked against hooks / manual math."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WIDTH, activation_net, close, np_batch, reference, save_exported, save_script
from torch import nn

from worker.engine.capture.loader import detect_format, model_inputs, open_model
from worker.engine.errors import AnalysisError


def test_every_activation_kind_matches_torch(x: torch.Tensor, tmp_path: Path) -> None:
    net, expected_ops = activation_net()
    path = save_exported(net, [x[:2]], tmp_path / "net.pt2")
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
    assert model.runtime == f"torch.export {torch.__version__} cpu" and model.format == "pt2"


class _InPlace(nn.Module):
    """An in-place activation at the top level and a functional one; a doubled use of ``act``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.act = nn.ReLU(inplace=True)
        self.out = nn.Linear(WIDTH, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        kept = h * 1.0
        h = self.act(h)  # overwrites h in the eager model; the exported graph is functional
        return self.out(torch.sigmoid(h + kept))


def test_in_place_activations_and_module_paths(x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _InPlace().eval()
    model = open_model(
        save_exported(net, [x[:2]], tmp_path / "m.pt2"), device="cpu", example=np_batch(x=x[:2])
    )

    result = model.capture(np_batch(x=x))

    assert [(layer.name, layer.op_type) for layer in model.layers] == [
        ("act:relu", "relu"),
        ("aten::sigmoid#0", "sigmoid"),
    ]
    with torch.no_grad():
        hidden = net.fc(x)
        joined = hidden.relu() + hidden
    assert close(result.pre[0], hidden) and close(result.post[0], hidden.relu())
    assert close(result.pre[1], joined) and close(result.post[1], torch.sigmoid(joined))


def test_a_static_batch_runs_in_padded_chunks(x: torch.Tensor, tmp_path: Path) -> None:
    """Exported with a fixed batch of 1 (a ``view`` bakes it in): discovery's 2 samples and a
    batch of 7 run one sample at a time."""

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(WIDTH, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)).view(1, 4)

    torch.manual_seed(0)
    net = Flat().eval()
    path = save_exported(net, [x[:1]], tmp_path / "static.pt2", dynamic_batch=False)
    assert model_inputs(path)[0].shape == (1, WIDTH)
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]))

    result = model.capture(np_batch(x=x))

    with torch.no_grad():
        hidden = net.fc(x)
    assert close(result.pre[0], hidden) and close(result.post[0], hidden.relu())
    assert close(result.outputs, hidden.relu())


def test_integer_inputs_and_activations_of_weights(tmp_path: Path) -> None:
    """Token ids go in as int64; an activation of a weight alone (a gate computed once) is no layer."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(11, WIDTH)
            self.gate = nn.Parameter(torch.randn(WIDTH))
            self.act = nn.GELU()

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.act(self.embed(ids) * torch.sigmoid(self.gate)).mean(dim=1)

    torch.manual_seed(0)
    net = Tokens().eval()
    ids = torch.randint(0, 11, (5, 3))
    path = save_exported(net, [ids[:2]], tmp_path / "tokens.pt2")
    model = open_model(path, device="cpu", example=np_batch(ids=ids[:2]))

    result = model.capture(np_batch(ids=ids))

    assert [(layer.name, layer.shape) for layer in model.layers] == [("act:gelu", (3, WIDTH))]
    assert model.inputs[0].dtype == "int64"
    with torch.no_grad():
        pre = net.embed(ids) * torch.sigmoid(net.gate)
    assert close(result.pre[0], pre.reshape(5, -1)) and close(result.outputs, net(ids))


def test_wrong_shapes_and_unknown_layers(x: torch.Tensor, tmp_path: Path) -> None:
    net, _ = activation_net()
    path = save_exported(net, [x[:2]], tmp_path / "net.pt2")
    with pytest.raises(AnalysisError) as caught:
        open_model(path, device="cpu", example=np_batch(x=x[:2]), layer_names=["nope"])
    assert caught.value.code == "unknown_layer"
    model = open_model(path, device="cpu", example=np_batch(x=x[:2]), layer_names=["net.3:leaky_relu"])
    assert [layer.name for layer in model.layers] == ["net.3:leaky_relu"]
    with pytest.raises(AnalysisError) as caught:
        model.capture({"x": np.zeros((3, WIDTH + 1), np.float32)})
    assert caught.value.code == "dataset_shape_mismatch"


def test_format_is_told_from_content(x: torch.Tensor, tmp_path: Path) -> None:
    net, _ = activation_net()
    exported = save_exported(net, [x[:2]], tmp_path / "model.pt")
    scripted = save_script(net, None, tmp_path / "model.pt2")
    assert detect_format(exported) == "pt2" and detect_format(scripted) == "torchscript"
    assert model_inputs(exported)[0].name == "x"


def test_a_broken_archive_is_invalid(x: torch.Tensor, tmp_path: Path) -> None:
    import zipfile

    path = save_exported(activation_net()[0], [x[:2]], tmp_path / "net.pt2")
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, b"{not json" if info.filename.endswith("models/model.json") else data)
    assert detect_format(broken) == "pt2"
    with pytest.raises(AnalysisError) as caught:
        open_model(broken, device="cpu", example=np_batch(x=x[:2]))
    assert caught.value.code == "model_invalid" and "torch.export.load" in caught.value.message
