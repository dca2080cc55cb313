"""Regenerate ros2_ws/src/emo_edge_ros/config/params.yaml from the parameter table (the node's own parameters
and StreamConfig's settings); tests/test_params.py checks the committed file equals it.

    python scripts/gen_ros_params.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "emo_edge_ros"))

from emo_edge_ros.params import main  # noqa: E402

if __name__ == "__main__":
    main(["--write"])
