"""The ``capture_points`` key of the analysis config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from neuronscope.contracts import AnalysisConfig


def test_a_capture_point_is_named_by_its_tensor_unless_given_a_name() -> None:
    config = AnalysisConfig.model_validate(
        {
            "capture_points": [
                {"tensor": "0", "breakpoints": [0.0]},
                {"tensor": "x", "breakpoints": [1.0], "name": "y"},
            ]
        }
    )

    assert [point.layer_name for point in config.capture_points] == ["0", "y"]
    assert AnalysisConfig().capture_points == []


@pytest.mark.parametrize(
    ("points", "layers", "expected"),
    [
        ([{"tensor": "0", "breakpoints": []}], None, "at least one value"),
        ([{"tensor": "0", "breakpoints": [1.0, 0.0]}], None, "strictly increasing"),
        ([{"tensor": "0"}], None, "breakpoints"),
        ([{"tensor": "", "breakpoints": [0.0]}], None, "tensor"),
        ([{"tensor": "0", "breakpoints": [0.0], "gamma": 1}], None, "gamma"),
        (
            [{"tensor": "a", "breakpoints": [0.0]}, {"tensor": "b", "breakpoints": [0.0], "name": "a"}],
            None,
            "['a']",
        ),
        ([{"tensor": "0", "breakpoints": [0.0]}], ["1:relu"], "left out"),
    ],
)
def test_invalid_capture_points_are_refused_saying_why(
    points: list[dict[str, object]], layers: list[str] | None, expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AnalysisConfig.model_validate({"capture_points": points, "layers": layers})

    assert expected in str(caught.value)
