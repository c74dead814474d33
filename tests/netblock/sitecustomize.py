"""Imported at start-up by the tests' subprocesses (via PYTHONPATH): refuse every non-loopback connection.

The harness must run offline; this makes any attempt to reach the network fail loudly instead of silently
succeeding on a machine that happens to have internet.
"""

import ipaddress
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guard(address):
    if not _loopback(address):
        raise OSError(101, f"network blocked by tests/netblock: {address!r}")


def connect(self, address):
    _guard(address)
    return _connect(self, address)


def connect_ex(self, address):
    _guard(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost") and not _loopback((host,)):
        raise socket.gaierror(socket.EAI_NONAME, f"network blocked by tests/netblock: {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo
