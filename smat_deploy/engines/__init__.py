"""From the float32 ONNX model to deployable precisions and engines: calibration data, FP16, INT8, TensorRT."""
