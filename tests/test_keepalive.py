"""Long silent calls survive our channels' keepalive pings. gRPC servers by default accept one ping
per 5 minutes and answer repeated early ones with GOAWAY "too_many_pings" (seen: a 4-minute
`audiolime explain --server` failed UNAVAILABLE "Too many pings"); the servers accept a ping every
10 s, below the channels' 30 s ping interval. (A scaled-down live reproduction, 1 s pings against
a 0.5 s acceptance, was not deterministic on this machine, so only the configuration is checked.)"""

from __future__ import annotations

from audiolime import channels
from audiolime.server import runtime


def test_the_servers_accept_the_channels_keepalive_pings():
    options = dict(runtime.KEEPALIVE_ACCEPTED)
    client_ms = dict(channels.CHANNEL_OPTIONS)["grpc.keepalive_time_ms"]
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] * 2 <= client_ms
    assert options["grpc.keepalive_permit_without_calls"] == 1
