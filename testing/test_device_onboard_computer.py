"""The simulated on-board computer, with seeded generators and plain values: no clock, no psutil."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from devices.onboard_computer import OnboardComputerSimulator
from devices.physics import NORMAL_LABEL, DetectionLabelSimulator, VehicleSpeedSimulator
from devices.telemetry import SystemReading

DT_S = 0.1
ONE_MINUTE = int(60 / DT_S)


def steady(seed: int, *, speed_kmh: float, label: str = NORMAL_LABEL, steps: int = ONE_MINUTE) -> list[SystemReading]:
    computer = OnboardComputerSimulator(random.Random(seed))
    return [computer.step(DT_S, speed_kmh=speed_kmh, detection_label=label) for _ in range(steps)]


def drive(seed: int, steps: int) -> list[SystemReading]:
    """A vehicle as the device runs it: speed and detection from the physics, the computer following them."""
    rng = random.Random(seed)
    speed, detection = VehicleSpeedSimulator(rng), DetectionLabelSimulator(rng)
    computer = OnboardComputerSimulator(random.Random(f"onboard:{seed}"))
    readings = []
    for _ in range(steps):
        kmh = speed.step(DT_S)
        label, _ = detection.step(DT_S)
        readings.append(computer.step(DT_S, speed_kmh=kmh, detection_label=label))
    return readings


def settled(readings: list[SystemReading], field: str) -> float:
    """The mean of the second half, once the load has followed its causes."""
    return statistics.fmean(getattr(r, field) for r in readings[len(readings) // 2 :])


def assert_plausible(reading: SystemReading) -> None:
    assert 0.0 <= reading.cpu_usage <= 100.0
    assert 0.0 <= reading.memory_used <= reading.memory_total
    assert reading.memory_available == pytest.approx(reading.memory_total - reading.memory_used, abs=0.2)
    assert 0.0 <= reading.memory_percent <= 100.0 and reading.ram_usage == reading.memory_percent
    assert 0.0 <= reading.disk_used <= reading.disk_total
    assert reading.disk_free == pytest.approx(reading.disk_total - reading.disk_used, abs=0.2)
    assert 0.0 <= reading.disk_percent <= 100.0


def test_different_vehicles_have_different_computers_and_the_same_seed_gives_the_same_series() -> None:
    fleet = [drive(seed, ONE_MINUTE) for seed in range(10)]
    assert len({readings[0].memory_total for readings in fleet}) == 10
    assert len({readings[0].disk_total for readings in fleet}) == 10
    for one, other in itertools.combinations(fleet, 2):
        assert [r.cpu_usage for r in one] != [r.cpu_usage for r in other]
        assert one[-1].disk_used != other[-1].disk_used

    assert drive(3, ONE_MINUTE) == drive(3, ONE_MINUTE)
    assert steady(3, speed_kmh=50.0) == steady(3, speed_kmh=50.0)


@pytest.mark.parametrize("seed", range(5))
def test_load_rises_with_speed(seed: int) -> None:
    parked = steady(seed, speed_kmh=0.0)
    motorway = steady(seed, speed_kmh=110.0)
    assert settled(motorway, "cpu_usage") > settled(parked, "cpu_usage") + 10.0
    assert settled(motorway, "memory_used") > settled(parked, "memory_used") + 50.0
    assert motorway[0].memory_total == parked[0].memory_total, "the same vehicle: the same hardware"


@pytest.mark.parametrize("seed", range(5))
def test_load_rises_during_a_detection_episode(seed: int) -> None:
    calm = steady(seed, speed_kmh=50.0)
    episode = steady(seed, speed_kmh=50.0, label="phone_usage")
    assert settled(episode, "cpu_usage") > settled(calm, "cpu_usage") + 5.0
    assert settled(episode, "memory_used") > settled(calm, "memory_used") + 100.0
    # The episode's clip is written and uploaded: disk and uplink grow faster.
    assert episode[-1].disk_used - episode[0].disk_used > 20 * (calm[-1].disk_used - calm[0].disk_used)
    assert episode[-1].network_bytes_sent - episode[0].network_bytes_sent > 5 * (
        calm[-1].network_bytes_sent - calm[0].network_bytes_sent
    )


@pytest.mark.parametrize("seed", range(5))
def test_readings_stay_plausible_on_a_drive_and_at_the_extremes(seed: int) -> None:
    readings = drive(seed, 10 * ONE_MINUTE)
    for reading in readings:
        assert_plausible(reading)
    for earlier, later in itertools.pairwise(readings):
        assert later.network_bytes_sent >= earlier.network_bytes_sent
        assert later.network_bytes_recv >= earlier.network_bytes_recv

    # Flat out through an endless episode, in hour-long steps: the disk fills, is cleaned up, never overflows.
    computer = OnboardComputerSimulator(random.Random(seed))
    extreme = [computer.step(3600.0, speed_kmh=500.0, detection_label="drowsy") for _ in range(200)]
    for reading in extreme:
        assert_plausible(reading)
    assert max(r.disk_percent for r in extreme) > 85.0
    assert any(later.disk_used < earlier.disk_used for earlier, later in itertools.pairwise(extreme)), "a clean-up"
