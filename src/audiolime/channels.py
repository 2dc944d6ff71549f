"""gRPC channels of every client (the explainer's to its backends, the Python client's to the
explainer) and the one message-size limit of servers and channels."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def normalize_target(target: str) -> str:
    """``host:port`` -> ``dns:///host:port`` (explicit schemes are kept)."""
    return target if "://" in target or target.startswith(("unix:", "ipv4:", "ipv6:")) else f"dns:///{target}"


CHANNEL_OPTIONS = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # a ping every 30 s keeps long silent calls alive through proxies; the servers accept it
    # (audiolime.server.runtime.KEEPALIVE_ACCEPTED)
    ("grpc.keepalive_time_ms", 30000),
)


def with_default_port(target: str, port: int) -> str:
    """``host`` -> ``host:port`` (``[v6]`` and bare IPv6 addresses too); a target that names a port
    or a scheme (``dns:///``, ``unix:``, ...) is kept as it is. gRPC itself would dial 443."""
    if "://" in target or target.startswith(("unix:", "ipv4:", "ipv6:", "dns:")):
        return target
    if target.startswith("["):
        return target if "]:" in target else f"{target}:{port}"
    if target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{port}"
    return target if ":" in target else f"{target}:{port}"


def make_channel(target: str, credentials: grpc.ChannelCredentials | None = None,
                 interceptors: Sequence[grpc.UnaryUnaryClientInterceptor | grpc.UnaryStreamClientInterceptor] = (),
                 ) -> grpc.Channel:
    """A channel that balances round-robin over every resolved address; TLS with ``credentials``
    (:func:`audiolime.tls.channel_credentials`), plaintext without; ``interceptors`` wrap it."""
    service_config: dict = {"loadBalancingConfig": [{"round_robin": {}}]}
    options = [*CHANNEL_OPTIONS, ("grpc.service_config", json.dumps(service_config))]
    if credentials is not None:
        channel = grpc.secure_channel(normalize_target(target), credentials, options=options)
    else:
        channel = grpc.insecure_channel(normalize_target(target), options=options)
    # Keep connecting in the background: gRPC Python only drives a connection attempt while some
    # thread waits on the channel, and fail-fast calls retried after a sleep do not wait, so a
    # TLS handshake to a restarted backend would never finish (plaintext only recovers slowly).
    channel.subscribe(_connectivity_changed, try_to_connect=True)
    return grpc.intercept_channel(channel, *interceptors) if interceptors else channel


def _connectivity_changed(state: grpc.ChannelConnectivity) -> None:
    log.debug("channel state", extra={"state": state.name})


