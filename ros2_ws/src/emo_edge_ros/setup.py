from glob import glob

from setuptools import find_packages, setup

package_name = "emo_edge_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="emo-edge",
    maintainer_email="emo-edge@example.org",
    description="ROS 2 node over the emo-edge live runtime, a clip player and an MCAP recorder",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "emotion_node = emo_edge_ros.node:main",
            "clip_player = emo_edge_ros.player:main",
            "mcap_recorder = emo_edge_ros.recorder:main",
        ],
    },
)
