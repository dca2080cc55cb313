"""ROS 2 adapters over `emo_edge.runtime`: the emotion node, a clip player and an MCAP recorder."""
