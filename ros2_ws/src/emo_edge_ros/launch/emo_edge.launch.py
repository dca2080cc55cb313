"""Launch the emo_edge node with config/params.yaml; the bundle and the input topics are arguments."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    params = Path(get_package_share_directory("emo_edge_ros")) / "config" / "params.yaml"
    args = [
        DeclareLaunchArgument("bundle", description="exported emo-edge bundle directory"),
        DeclareLaunchArgument("params", default_value=str(params), description="parameter file"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic to subscribe to"),
        DeclareLaunchArgument("audio", default_value="/audio", description="emo_edge_msgs/AudioChunk topic"),
        DeclareLaunchArgument("input", default_value="topics", description="topics or capture (camera + mic here)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start; false leaves the lifecycle node "
                                          "unconfigured for a lifecycle manager"),
    ]
    node = Node(
        package="emo_edge_ros", executable="emotion_node", name="emo_edge", output="screen",
        parameters=[LaunchConfiguration("params"),
                    {"bundle": LaunchConfiguration("bundle"), "input": LaunchConfiguration("input"),
                     "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool)}],
        remappings=[("image", LaunchConfiguration("image")), ("audio", LaunchConfiguration("audio"))],
    )
    return LaunchDescription([*args, node])
