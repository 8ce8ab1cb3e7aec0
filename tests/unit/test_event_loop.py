"""The event loop that knows how busy it is."""

from __future__ import annotations

import asyncio
import time

from tfclassify.server.core.event_loop import SATURATED, MeasuredEventLoop


def on_measured_loop(scenario):
    """``scenario(loop)`` run to its end on a new MeasuredEventLoop."""
    loop = MeasuredEventLoop()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def test_a_loop_waiting_for_io_is_idle_and_one_running_callbacks_is_saturated():
    async def idle(loop: MeasuredEventLoop):
        await asyncio.sleep(0.15)  # in the selector all along
        return loop.busy_fraction(), loop.saturated()

    async def busy(loop: MeasuredEventLoop):
        time.sleep(0.15)  # a callback that keeps the loop from its selector
        return loop.busy_fraction(), loop.saturated()

    idle_share, idle_saturated = on_measured_loop(idle)
    busy_share, busy_saturated = on_measured_loop(busy)
    assert idle_share < 0.2 and not idle_saturated
    assert busy_share >= SATURATED and busy_saturated


def test_a_loop_nobody_asked_for_two_windows_counts_as_quiet():
    async def scenario(loop: MeasuredEventLoop):
        time.sleep(0.25)  # busy, but the first question comes after two windows: nothing known of the last one
        return loop.busy_fraction()

    assert on_measured_loop(scenario) == 0.0
