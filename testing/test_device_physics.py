"""The simulators' physics, with a seeded generator and plain lists: no clock, no network."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from devices.physics import (
    EPISODE_DURATION_S,
    EPISODE_LABELS,
    MAX_SPEED_KMH,
    NORMAL_LABEL,
    DetectionLabelSimulator,
    VehicleSpeedSimulator,
)

DT_S = 0.1
TEN_MINUTES = int(600 / DT_S)
STEPS_PER_S = int(1 / DT_S)


def drive(seed: int, steps: int = TEN_MINUTES) -> list[float]:
    simulator = VehicleSpeedSimulator(random.Random(seed))
    return [simulator.step(DT_S) for _ in range(steps)]


def stretches(speeds: list[float], *, rising: bool, min_change_kmh: float, within_s: float) -> int:
    """How many separate windows of `within_s` where the speed rises (or falls) by at least `min_change_kmh`."""
    width = int(within_s * STEPS_PER_S)
    found, index = 0, 0
    while index + width < len(speeds):
        change = speeds[index + width] - speeds[index]
        if (change if rising else -change) >= min_change_kmh:
            found += 1
            index += width
        else:
            index += 1
    return found


@pytest.mark.parametrize("seed", range(5))
def test_ten_minutes_of_driving_stay_within_0_to_120_with_accelerating_and_braking_stretches(seed: int) -> None:
    speeds = drive(seed)

    assert min(speeds) >= 0.0
    assert max(speeds) <= MAX_SPEED_KMH
    assert max(speeds) > 60.0, "a ten-minute drive should get beyond town speed"
    assert stretches(speeds, rising=True, min_change_kmh=20.0, within_s=5.0) >= 3
    assert stretches(speeds, rising=False, min_change_kmh=20.0, within_s=5.0) >= 3


@pytest.mark.parametrize("seed", range(5))
def test_speed_changes_at_car_like_rates(seed: int) -> None:
    speeds = drive(seed)
    per_second = [speeds[i + STEPS_PER_S] - speeds[i] for i in range(len(speeds) - STEPS_PER_S)]

    # 3.5 m/s² is 12.6 km/h per second and 6 m/s² braking is 21.6; the noise adds a little.
    assert max(per_second) < 16.0
    assert min(per_second) > -25.0
    # Not a square wave: most seconds change the speed by little (cruising), some by a lot.
    gentle = sum(1 for change in per_second if abs(change) < 3.0)
    assert 0.5 < gentle / len(per_second) < 0.98


def test_the_vehicle_stops_now_and_then_and_moves_off_again() -> None:
    stopped_stretches = 0
    for seed in range(5):
        speeds = drive(seed)
        stopped = [speed == 0.0 for speed in speeds]
        # A stop is at least 3 s at 0 km/h after having moved.
        for index in range(STEPS_PER_S * 10, len(stopped) - 3 * STEPS_PER_S, 3 * STEPS_PER_S):
            if all(stopped[index : index + 3 * STEPS_PER_S]) and max(speeds[:index]) > 20.0:
                stopped_stretches += 1
    assert stopped_stretches >= 3
    assert max(drive(0)[-STEPS_PER_S * 60 :]) > 0.0


def test_the_same_seed_drives_the_same_way_and_the_step_size_does_not_change_the_physics() -> None:
    assert drive(7, 3000) == drive(7, 3000)
    coarse = VehicleSpeedSimulator(random.Random(3))
    speeds = [coarse.step(1.0) for _ in range(600)]
    assert min(speeds) >= 0.0 and max(speeds) <= MAX_SPEED_KMH
    assert max(abs(b - a) for a, b in itertools.pairwise(speeds)) < 25.0


def test_detection_is_mostly_normal_with_episodes_lasting_a_few_seconds() -> None:
    simulator = DetectionLabelSimulator(random.Random(11))
    readings = [simulator.step(DT_S) for _ in range(TEN_MINUTES * 3)]
    labels = [label for label, _ in readings]
    counts = Counter(labels)

    assert counts[NORMAL_LABEL] / len(labels) > 0.75
    assert set(counts) - {NORMAL_LABEL} <= set(EPISODE_LABELS)
    assert len(set(counts) - {NORMAL_LABEL}) >= 4, counts
    assert all(0.0 <= confidence <= 1.0 for _, confidence in readings)

    episodes: list[tuple[str, float]] = []
    for label, previous in zip(labels[1:], labels, strict=False):
        if label != NORMAL_LABEL and label == previous:
            episodes[-1] = (label, episodes[-1][1] + DT_S)
        elif label != NORMAL_LABEL:
            episodes.append((label, DT_S))
    assert len(episodes) >= 20
    for label, duration in episodes:
        low, high = EPISODE_DURATION_S[label]
        assert low - DT_S <= duration <= high + DT_S, (label, duration)
