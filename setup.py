"""ament_python package that also installs with pip (`pip install -e .[sim,bench]`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mile_ros"
NODES = ["arm", "camera", "joystick", "arbiter", "policy_server", "recorder", "train", "sim_human"]

setup(
    name="mile-ros",
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    package_data={PACKAGE + ".description": ["*.yaml"]},   # the wx250s kinematics facts
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    python_requires=">=3.10",
    # torch is pinned by the set-up script (.ci/setup) so that pip takes the CPU wheel; ROS 2
    # Python packages come from the ROS distribution, or from PyPI through the `ros` extra.
    install_requires=["numpy", "pyyaml", "tqdm", "matplotlib", "scipy", "rosbags>=0.10",
                      "opencv-python-headless", "pygame", "mujoco"],
    extras_require={
        "ros": ["ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-std-msgs", "ros-sensor-msgs",
                "ros-geometry-msgs"],
        "bench": ["metaworld", "packaging", "gymnasium", "box2d"],
        "test": ["pytest"],
    },
    zip_safe=True,
    maintainer="mile_ros developers",
    description="MILE intervention learning on an Interbotix WidowX 250 6DOF with ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + ["mile-ros = mile_ros.cli:main"],
    },
)
