"""REP-155 (ROS4HRI) output: each head state as hri_msgs/Expression on /humans/faces/<id>/expression.

The face id: `hri_face_id` when set; else, while /humans/faces/tracked (hri_msgs/IdsList) is published, the
largest tracked face by its /humans/faces/<id>/roi (the first tracked one until a ROI arrives); with nothing
tracked, `hri_default_face_id`. hri_msgs is imported only here and only when the node publishes expressions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# our label (any label set the bundle carries) -> the hri_msgs/Expression constant's value; the one table
EXPRESSIONS: dict[str, str] = {
    "neutral": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry",
    "worried": "scared", "fear": "scared", "fearful": "scared", "anxious": "scared",
    "surprise": "surprised", "surprised": "surprised",
    "disgust": "disgusted", "disgusted": "disgusted",
    "bored": "bored", "confused": "confused", "excited": "excited",
}


class ExpressionOrder:
    """Which head states become expressions: an expression is the face's state at its stamp, so a subscriber gets
    them in time order. A withdrawn early answer (status "withdrawn") is never one, and a state whose stamp is not
    newer than the last expression's (the final re-publication of an utterance's early answer, an utterance window
    that ended before the latest sliding one) adds nothing newer about the face."""

    def __init__(self) -> None:
        self.last_stamp_s: float | None = None

    def admit(self, status: str, stamp_s: float) -> bool:
        if status == "withdrawn" or (self.last_stamp_s is not None and stamp_s <= self.last_stamp_s):
            return False
        self.last_stamp_s = stamp_s
        return True


def expression_of(label: str) -> str:
    """The REP-155 expression of one of our labels; '' for a label the table does not map."""
    return EXPRESSIONS.get(label.lower(), "")


def face_area(roi: Any) -> float:
    """Area of a NormalizedRegionOfInterest2D (normalised image units)."""
    return max(0.0, roi.xmax - roi.xmin) * max(0.0, roi.ymax - roi.ymin)


ROI_WAIT_S = 1.0  # s a newly tracked face may go without an ROI before the largest face is chosen without it


class FaceChooser:
    """Which face id the expressions go to, from the parameters, /humans/faces/tracked and each face's ROI.

    With several faces tracked, the choice waits (no expression) until each has an ROI or has been tracked for
    ROI_WAIT_S: the node subscribes to a face's ROI only once the face is tracked, and guessing meanwhile would
    send the first expressions to the wrong face."""

    def __init__(self, configured: str, default: str, clock: Callable[[], float] = time.monotonic):
        self.configured, self.default, self.clock = configured, default, clock
        self.tracked: list[str] | None = None  # None: /humans/faces/tracked never heard
        self.areas: dict[str, float] = {}
        self.first_seen: dict[str, float] = {}

    def on_tracked(self, ids: list[str]) -> None:
        now = self.clock()
        self.tracked = list(ids)
        self.first_seen = {i: self.first_seen.get(i, now) for i in ids}
        self.areas = {k: v for k, v in self.areas.items() if k in ids}

    def on_roi(self, face_id: str, area: float) -> None:
        self.areas[face_id] = area

    def current(self) -> str | None:
        """The face to publish for now; None when faces are tracked but not the configured one (or none)."""
        if self.tracked is None:
            return self.configured or self.default
        if self.configured:
            return self.configured if self.configured in self.tracked else None
        if not self.tracked:
            return None
        now = self.clock()
        if len(self.tracked) > 1 and any(i not in self.areas and now - self.first_seen[i] < ROI_WAIT_S
                                         for i in self.tracked):
            return None
        return max(self.tracked, key=lambda i: (self.areas.get(i, -1.0), -self.tracked.index(i)))


class ExpressionPublisher:
    """Creates the Expression publishers (one per face id, on first use) and the tracked / ROI subscriptions."""

    def __init__(self, node: Any, topic: str, configured: str, default: str, guard: Callable[[str, Callable], Any]):
        from hri_msgs.msg import Expression, IdsList, NormalizedRegionOfInterest2D
        from rclpy.qos import QoSProfile, qos_profile_sensor_data

        self.node, self.topic, self.Expression = node, topic, Expression
        self.faces = FaceChooser(configured, default)
        self._pubs: dict[str, Any] = {}
        self._roi_subs: dict[str, Any] = {}
        self._roi_type, self._guard = NormalizedRegionOfInterest2D, guard
        self._qos, self._sensor_qos = QoSProfile(depth=10), qos_profile_sensor_data
        self._subs = [node.create_subscription(IdsList, "/humans/faces/tracked", guard("faces_tracked", self._tracked),
                                               self._qos)]

    def _tracked(self, msg: Any) -> None:
        self.faces.on_tracked(list(msg.ids))
        if self.faces.configured:
            return
        for face_id in msg.ids:  # the largest face needs each face's ROI
            if face_id not in self._roi_subs:
                self._roi_subs[face_id] = self.node.create_subscription(
                    self._roi_type, f"/humans/faces/{face_id}/roi",
                    self._guard("faces_roi", lambda m, i=face_id: self.faces.on_roi(i, face_area(m))), self._sensor_qos)
        for face_id in set(self._roi_subs) - set(msg.ids):
            self.node.destroy_subscription(self._roi_subs.pop(face_id))

    def publish(self, header: Any, label: str, scores: list[float], labels: list[str], valence: float,
                arousal: float) -> None:
        face_id = self.faces.current()
        if face_id is None:
            return
        if face_id not in self._pubs:
            self._pubs[face_id] = self.node.create_publisher(self.Expression, self.topic.format(id=face_id), self._qos)
        msg = self.Expression()
        msg.header = header
        msg.expression = expression_of(label)
        msg.valence, msg.arousal = float(valence), float(arousal)
        msg.confidence = float(scores[labels.index(label)]) if label in labels and scores else 0.0
        self._pubs[face_id].publish(msg)

    def close(self) -> None:
        for sub in [*self._subs, *self._roi_subs.values()]:
            self.node.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.node.destroy_publisher(pub)
        self._subs, self._roi_subs, self._pubs = [], {}, {}
