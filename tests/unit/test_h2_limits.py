from __future__ import annotations

import h2.settings
import pytest

from gateway.h2_limits import (
    INITIAL_CONNECTION_WINDOW,
    MAX_CONNECTION_WINDOW,
    STREAM_WINDOW,
    Http2Limits,
    connection_window_increment,
    server_settings,
)
from gateway.settings import Settings


@pytest.mark.parametrize(
    ("max_streams", "increment"),
    [
        (1, 0),  # one stream's window is the initial connection window: nothing to add
        (2, 2 * STREAM_WINDOW - INITIAL_CONNECTION_WINDOW),
        (100, 100 * STREAM_WINDOW - INITIAL_CONNECTION_WINDOW),
        (10_000, MAX_CONNECTION_WINDOW - INITIAL_CONNECTION_WINDOW),  # capped
    ],
)
def test_the_connection_window_has_room_for_every_stream_up_to_the_cap(max_streams: int, increment: int) -> None:
    assert connection_window_increment(max_streams) == increment


def test_the_settings_sent_to_a_client_carry_the_limits_and_refuse_server_push() -> None:
    settings = server_settings(max_streams=7, max_header_bytes=4096)
    assert settings.max_concurrent_streams == 7
    assert settings.max_header_list_size == 4096
    assert settings.initial_window_size == STREAM_WINDOW
    assert settings.enable_push == 0
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7


def test_limits_come_from_the_settings() -> None:
    settings = Settings(upstream_url="http://web-svc:80", http2_max_concurrent_streams=3, client_keepalive_timeout=2)
    assert Http2Limits.from_settings(settings) == Http2Limits(3, 2.0)
