"""Export of the certified control law: ONNX, C99 bundle, builds and manifest."""
