"""HybridNets inference without ROS: letterboxing, post-processing, backends and the pipeline.

Importing this package is cheap; the pipeline (which pulls in the model) is imported from its module.
"""
