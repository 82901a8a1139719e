"""Model front ends: load an ONNX or TorchScript model, find its activation layers and capture
their pre- and post-activation values batch by batch."""
