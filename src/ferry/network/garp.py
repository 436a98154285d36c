"""Gratuitous ARP: tell an L2 segment that an IP now lives behind a MAC, so
bridges and peers relearn a restored or migrated container at once.

Runs inside the container's netns as `python -m ferry.network.garp IFACE IP MAC`
(NetworkManager.announce starts it with `ip netns exec`).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
ARP_HTYPE_ETHERNET = 1
BROADCAST = b"\xff" * 6
ANNOUNCEMENTS = 2      # a second copy survives one lost frame


def announcement(ip: str, mac: str) -> bytes:
    """An ARP request for our own IP, from our own MAC, to everyone (RFC 5227's announcement)."""
    hw = bytes.fromhex(mac.replace(":", ""))
    address = ipaddress.IPv4Address(ip).packed
    ethernet = BROADCAST + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4, ARP_REQUEST,
                      hw, address, b"\x00" * 6, address)
    return ethernet + arp


def send(interface: str, ip: str, mac: str) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((interface, 0))
        frame = announcement(ip, mac)
        for _ in range(ANNOUNCEMENTS):
            raw.send(frame)


if __name__ == "__main__":
    send(*sys.argv[1:4])
