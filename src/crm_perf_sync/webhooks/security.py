"""Where a webhook may be sent: the SSRF guard, applied to every attempt.

A URL must be ``https`` unless its host is allow-listed. At send time the host name is resolved
and every address it resolves to is checked: private, loopback, link-local (cloud metadata
services live there), multicast, reserved and unspecified addresses are refused unless the host
name or the address (or a network containing it) is allow-listed. The request then goes to the
address that was checked, so a name cannot resolve to something else between the check and the
connection (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Cloud metadata services that are not in a link-local range (AWS IPv6, Alibaba).
METADATA = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))


class RefusedTarget(Exception):
    """The URL may not be called: the message says why (and how to allow it)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: connect to ``address``, present ``host`` (Host header and TLS name)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def connect_url(self) -> str:
        """The URL with its host replaced by the checked address."""
        parts = urlsplit(self.url)
        address = f"[{self.address}]" if ":" in self.address else self.address
        return parts._replace(netloc=f"{address}:{self.port}").geturl()


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RefusedTarget(f"{host} does not resolve: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class Guard:
    """``allow``: host names, addresses and networks (CIDR) that may be called even when internal
    or over plain HTTP, e.g. ``["127.0.0.1", "hooks.internal", "10.20.0.0/16"]``."""

    allow: Sequence[str] = ()
    resolver: Resolver = system_resolver

    def _allowed_host(self, host: str) -> bool:
        return host.lower() in {entry.lower() for entry in self.allow}

    def _allowed_address(self, address: IPAddress) -> bool:
        for entry in self.allow:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue  # a host name
        return False

    def check_url(self, url: str) -> tuple[str, str, int]:
        """The URL's scheme, host and port, if its form may be called (before any resolution)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise RefusedTarget(f"not a valid URL: {exc}") from None
        host = (parts.hostname or "").strip()
        if parts.scheme not in ("https", "http") or not host:
            raise RefusedTarget("a webhook URL is https://host/path")
        if parts.username or parts.password:
            raise RefusedTarget("credentials in a webhook URL are not allowed: sign-in is the signature")
        if parts.scheme == "http" and not self._allowed_host(host) and not _literal_allowed(self, host):
            raise RefusedTarget(f"{host} is not allow-listed for plain http: use https")
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    def resolve(self, url: str) -> Target:
        """The address to send to, after checking every address the host resolves to."""
        scheme, host, port = self.check_url(url)
        addresses = self.resolver(host, port)
        if not addresses:
            raise RefusedTarget(f"{host} resolves to no address")
        host_allowed = self._allowed_host(host)
        for text in addresses:
            address = ipaddress.ip_address(text.split("%")[0])
            if host_allowed or self._allowed_address(address):
                continue
            reason = internal(address)
            if reason is not None:
                raise RefusedTarget(
                    f"{host} resolves to {address}, {reason}: refused (allow-list the host to permit it)"
                )
        return Target(url, scheme, host, port, addresses[0].split("%")[0])


def _literal_allowed(guard: Guard, host: str) -> bool:
    try:
        return guard._allowed_address(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return False


def internal(address: IPAddress) -> str | None:
    """Why an address is not a public one, or ``None`` when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return internal(address.ipv4_mapped)
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "not a unicast public address"
    return None
