"""Synthetic driving scenes with exact labels: the world model, the renderer, ground truth in metres and the
BDD100K-layout dataset writer (numpy and OpenCV only; used by training, calibration, benchmarks, tests and the demo)."""
