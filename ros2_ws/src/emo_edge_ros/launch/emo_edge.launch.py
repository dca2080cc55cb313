"""Launch the emo_edge node with config/params.yaml; the bundle, the input topics and a few parameters are
arguments. An argument named like a node parameter (PARAMETER_ARGS) has that parameter's default and is passed
to it; tests/test_launch.py checks both against the parameter table (emo_edge_ros/params.py)."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# launch argument -> topic it remaps
TOPIC_ARGS = {"image": "image", "audio": "audio", "audio_info": "audio_info", "transcript": "transcript"}
# launch arguments passed as the node parameters of the same name (with the type they are read as)
PARAMETER_ARGS = {"bundle": str, "input": str, "audio_type": str, "transcript_type": str, "hri_face_id": str,
                  "autostart": bool}


def generate_launch_description() -> LaunchDescription:
    params = Path(get_package_share_directory("emo_edge_ros")) / "config" / "params.yaml"
    args = [
        DeclareLaunchArgument("bundle", description="exported emo-edge bundle directory"),
        DeclareLaunchArgument("params", default_value=str(params), description="parameter file"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic to subscribe to"),
        DeclareLaunchArgument("audio", default_value="/audio", description="audio topic (its type: audio_type)"),
        DeclareLaunchArgument("audio_info", default_value="/audio_info",
                              description="audio_common_msgs/AudioInfo topic (audio_type audio_data*)"),
        DeclareLaunchArgument("transcript", default_value="/transcript",
                              description="recognised speech topic (its type: transcript_type)"),
        DeclareLaunchArgument("input", default_value="topics", description="topics or capture (camera + mic here)"),
        DeclareLaunchArgument("audio_type", default_value="chunk",
                              description="chunk (emo_edge_msgs/AudioChunk), audio_data_stamped or audio_data "
                                          "(audio_common_msgs)"),
        DeclareLaunchArgument("transcript_type", default_value="string",
                              description="string (std_msgs/String), live_speech (hri_msgs/LiveSpeech) or off"),
        DeclareLaunchArgument("hri_face_id", default_value="",
                              description="face id of the REP-155 expressions ('' = the largest tracked face)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start; false leaves the lifecycle node "
                                          "unconfigured for a lifecycle manager"),
    ]
    overrides = {name: ParameterValue(LaunchConfiguration(name), value_type=kind)
                 for name, kind in PARAMETER_ARGS.items()}
    node = Node(
        package="emo_edge_ros", executable="emotion_node", name="emo_edge", output="screen",
        parameters=[LaunchConfiguration("params"), overrides],
        remappings=[(topic, LaunchConfiguration(arg)) for arg, topic in TOPIC_ARGS.items()],
    )
    return LaunchDescription([*args, node])
