"""The pip requirements of the optional runtimes, with the versions this package is tested with, written once.

setup.py builds its extras from this table without importing the package (it executes this file, so it imports
nothing), and a backend whose runtime is missing names the requirement to install from it.
"""

PIP_REQUIREMENTS = {
    "onnx": "onnx==1.23.2",
    "onnxruntime": "onnxruntime==1.32.0",
    "onnxscript": "onnxscript",
    "openvino": "openvino==2026.4.1",
    "nncf": "nncf==3.4.0",  # post-training INT8 quantisation for the openvino backend
    "tensorrt": "tensorrt",  # comes with a CUDA/TensorRT install (see README), not from a setup.py extra
}
