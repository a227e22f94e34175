"""ONNX export of a HybridNets checkpoint, in three modules with one job each (import them, not this package):

* :mod:`.exporter`: the library (what the backends' ONNX cache imports): writes and reads ONNX files;
* :mod:`.verify`: runs an exported file in ONNX Runtime and compares it with the torch pipeline;
* :mod:`.cli`: the ``hybridnets-export`` command, which also builds TensorRT engines and OpenVINO int8 models.

The dependencies point one way (cli -> verify -> pipeline/backends -> exporter), so nothing imports in a cycle.
"""
