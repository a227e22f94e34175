"""ament_python packaging of hybridnets_ros, for colcon workspaces and for plain `pip install .` alike.

Both install the same tree under the prefix: the Python package, console scripts in bin/, the node launcher in
lib/hybridnets_ros/ (where `ros2 run` and launch_ros look), and share/hybridnets_ros/{launch,config,models} plus the
ament index marker, so `get_package_share_directory('hybridnets_ros')` works with AMENT_PREFIX_PATH=<prefix>.
"""
import runpy
from glob import glob
from xml.etree import ElementTree

from setuptools import find_packages, setup

PACKAGE = "hybridnets_ros"
# package.xml is the single source of the version.
VERSION = ElementTree.parse("package.xml").getroot().findtext("version")
# The pinned optional runtimes, written once (a missing backend's error names the same requirement).
PINS = runpy.run_path("hybridnets_ros/requirements.py")["PIP_REQUIREMENTS"]

# PyPI ROS 2 wheels for machines without a ROS install; a ROS install provides these itself (rosdep, package.xml).
ROS_PIP = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-std-msgs",
    "ros-sensor-msgs",
    "ros-geometry-msgs",
    "ros-diagnostic-msgs",
    "ros-lifecycle-msgs",
    "ros-rosgraph-msgs",
    "ros-rcl-interfaces",
    "ros-builtin-interfaces",
    "ros-nav-msgs",
    "ros-visualization-msgs",
    "ros-ament-index-python",
]

setup(
    name=PACKAGE,
    version=VERSION,
    description="HybridNets multi-task perception (vehicles, drivable area, lane lines) for ROS 2",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.py"))),
        (f"share/{PACKAGE}/config", sorted(p for p in glob("config/*") if not p.endswith("~"))),
        (f"share/{PACKAGE}/models", sorted(glob("models/*.yaml") + glob("models/*.pt") + glob("models/*.md"))),
        (f"lib/{PACKAGE}", ["resource/hybridnets_node"]),
    ],
    # Runtime Python libraries. torch is not pinned: CPU or CUDA builds are the user's choice (see README).
    # ROS packages (rclpy, messages, launch) are not pip requirements: they come from ROS or the `ros-pip` extra.
    install_requires=[
        "setuptools",
        "numpy",
        "torch>=2.1",
        "opencv-python-headless",
        "pyyaml",
        "tqdm",
        "pillow",
        "simplejpeg==1.9.0",  # strict JPEG decoding: a corrupt scan is an error, not a grey frame (node input)
        "rosbags>=0.10",
    ],
    extras_require={
        "onnx": [PINS["onnx"], PINS["onnxruntime"], PINS["onnxscript"]],
        "openvino": [PINS["openvino"], PINS["nncf"]],
        "train": ["tensorboard"],
        "test": ["pytest", "pytest-timeout", "catkin_pkg"],
        "ros-pip": ROS_PIP,
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "hybridnets-infer = hybridnets_ros.inference.cli:main",
            "hybridnets-export = hybridnets_ros.inference.export.cli:main",
            "hybridnets-train = hybridnets_ros.training.train:main",
            "hybridnets-distill = hybridnets_ros.training.distill_train:main",
            "hybridnets-adapt-bn = hybridnets_ros.training.adapt_bn:main",
            "hybridnets-eval = hybridnets_ros.training.evaluate:main",
            "hybridnets-anchors = hybridnets_ros.training.anchors:main",
            "hybridnets-synth = hybridnets_ros.synth.cli:main",
            "hybridnets_node = hybridnets_ros.ros.node:main",
        ],
    },
)
