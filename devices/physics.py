"""What a simulated vehicle measures: its speed and the driver-monitoring camera's label.

No I/O and no clock: the random generator and the elapsed time are passed in, so a seeded
`random.Random` replays the same drive and the tests check the physics with plain lists.
"""

from __future__ import annotations

import math
import random

KMH_PER_MS = 3.6
MAX_SPEED_KMH = 120.0

# Driving regimes a new target speed is drawn from: (weight, lowest km/h, highest km/h).
TARGET_REGIMES = ((0.45, 25.0, 60.0), (0.30, 60.0, 90.0), (0.25, 90.0, MAX_SPEED_KMH))
STOP_PROBABILITY = 0.15  # chance that the next target is a stop (traffic light, junction)
STOP_DURATION_S = (5.0, 40.0)
HOLD_TARGET_S = (10.0, 60.0)  # how long a target speed stands before a new one is drawn
ACCELERATION_MS2 = (2.0, 3.5)
BRAKING_MS2 = (3.0, 6.0)
# The approach slows near the target (the gap closes with this rate, 1/s) so curves are smooth.
APPROACH_GAIN_PER_S = 0.6
CRUISE_NOISE_MS_PER_SQRT_S = 0.35  # Gaussian wandering around the target while moving
STOPPED_BELOW_MS = 0.3

NORMAL_LABEL = "normal"
EPISODE_DURATION_S: dict[str, tuple[float, float]] = {
    "eyes_closed": (1.0, 3.0),
    "distracted": (2.0, 6.0),
    "smoking": (4.0, 10.0),
    "phone_usage": (3.0, 10.0),
    "yawning": (2.0, 5.0),
    "drowsy": (3.0, 8.0),
}
EPISODE_LABELS = tuple(EPISODE_DURATION_S)
MEAN_NORMAL_GAP_S = 30.0  # average time between two episodes
NORMAL_CONFIDENCE = (0.90, 0.99)
EPISODE_CONFIDENCE = (0.60, 0.95)


class VehicleSpeedSimulator:
    """Speed in km/h, 0-120, driving toward targets that change at random.

    It accelerates at 2-3.5 m/s² and brakes at 3-6 m/s² (drawn per manoeuvre), eases into each
    target, wanders around it with Gaussian noise, and now and then stops for a few seconds.
    """

    def __init__(self, rng: random.Random, *, initial_kmh: float = 0.0) -> None:
        self._rng = rng
        self._speed_ms = max(0.0, min(initial_kmh, MAX_SPEED_KMH)) / KMH_PER_MS
        self._target_ms = 0.0
        self._acceleration_ms2 = rng.uniform(*ACCELERATION_MS2)
        self._braking_ms2 = rng.uniform(*BRAKING_MS2)
        self._hold_s = rng.uniform(*STOP_DURATION_S) / 4  # a short wait at the start, then drive off

    @property
    def speed_kmh(self) -> float:
        return min(self._speed_ms * KMH_PER_MS, MAX_SPEED_KMH)  # the m/s round trip can overshoot by 1e-14

    @property
    def target_kmh(self) -> float:
        return self._target_ms * KMH_PER_MS

    def step(self, dt_s: float) -> float:
        """Advance by `dt_s` seconds and return the new speed in km/h."""
        if dt_s <= 0:
            return self.speed_kmh
        stopping = self._target_ms == 0.0
        # A stop's clock starts once the car stands still; a cruise target's clock runs at once.
        if not stopping or self._speed_ms == 0.0:
            self._hold_s -= dt_s
        if self._hold_s <= 0:
            self._choose_target()

        gap = self._target_ms - self._speed_ms
        if gap >= 0:
            rate = min(self._acceleration_ms2, APPROACH_GAIN_PER_S * gap + 0.2)
            change = min(rate * dt_s, gap)
        else:
            rate = min(self._braking_ms2, APPROACH_GAIN_PER_S * -gap + 0.5)
            change = max(-rate * dt_s, gap)
        speed = self._speed_ms + change
        if self._target_ms > 0.0 and speed > 0.0:
            speed += self._rng.gauss(0.0, CRUISE_NOISE_MS_PER_SQRT_S * math.sqrt(dt_s))
        if self._target_ms == 0.0 and speed < STOPPED_BELOW_MS:
            speed = 0.0
        self._speed_ms = max(0.0, min(speed, MAX_SPEED_KMH / KMH_PER_MS))
        return self.speed_kmh

    def _choose_target(self) -> None:
        rng = self._rng
        if self._target_ms > 0.0 and rng.random() < STOP_PROBABILITY:
            self._target_ms = 0.0
            self._hold_s = rng.uniform(*STOP_DURATION_S)
        else:
            weights = [regime[0] for regime in TARGET_REGIMES]
            _, low, high = rng.choices(TARGET_REGIMES, weights=weights)[0]
            self._target_ms = rng.uniform(low, high) / KMH_PER_MS
            self._hold_s = rng.uniform(*HOLD_TARGET_S)
        self._acceleration_ms2 = rng.uniform(*ACCELERATION_MS2)
        self._braking_ms2 = rng.uniform(*BRAKING_MS2)


class DetectionLabelSimulator:
    """The in-cabin camera: `normal` most of the time, with episodes lasting a few seconds."""

    def __init__(self, rng: random.Random, *, mean_normal_gap_s: float = MEAN_NORMAL_GAP_S) -> None:
        self._rng = rng
        self._mean_normal_gap_s = mean_normal_gap_s
        self._label = NORMAL_LABEL
        self._remaining_s = rng.expovariate(1.0 / mean_normal_gap_s)
        self._episode_confidence = 0.0

    @property
    def label(self) -> str:
        return self._label

    def step(self, dt_s: float) -> tuple[str, float]:
        """Advance by `dt_s` seconds; return (label, confidence 0-1)."""
        rng = self._rng
        self._remaining_s -= max(dt_s, 0.0)
        while self._remaining_s <= 0:
            if self._label == NORMAL_LABEL:
                self._label = rng.choice(EPISODE_LABELS)
                self._remaining_s += rng.uniform(*EPISODE_DURATION_S[self._label])
                self._episode_confidence = rng.uniform(*EPISODE_CONFIDENCE)
            else:
                self._label = NORMAL_LABEL
                self._remaining_s += rng.expovariate(1.0 / self._mean_normal_gap_s)
        if self._label == NORMAL_LABEL:
            confidence = rng.uniform(*NORMAL_CONFIDENCE)
        else:
            confidence = self._episode_confidence + rng.gauss(0.0, 0.03)
        return self._label, round(min(max(confidence, 0.5), 0.99), 3)
