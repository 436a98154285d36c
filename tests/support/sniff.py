"""A packet capture of one interface (AF_PACKET), for tests that must show what
an eavesdropper on the link would read: the TCP payload of each connection."""

from __future__ import annotations

import collections
import socket
import struct
import threading

ETH_P_ALL = 0x0003
ETH_HEADER = 14
SOL_PACKET, PACKET_STATISTICS = 263, 6   # linux/if_packet.h: struct tpacket_stats {packets, drops}
SO_RCVBUFFORCE = 33
BUFFER = 256 << 20   # tens of MiB arrive in bursts faster than Python reads them


class Capture:
    """TCP payload bytes per (source port, destination port) seen on `interface`."""

    def __init__(self, interface: str = "lo"):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
        self.sock.bind((interface, 0))
        self.sock.settimeout(0.2)
        self.dropped = 0   # packets the kernel dropped: a capture with drops proves nothing
        self.flows: dict[tuple[int, int], bytearray] = collections.defaultdict(bytearray)
        self._seen: set[tuple[int, int, int]] = set()   # lo shows each packet twice (out and in)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Capture":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        _packets, self.dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(1 << 17)
            except socket.timeout:
                continue
            self._take(frame[ETH_HEADER:])

    def _take(self, packet: bytes) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
            return
        ip_len = (packet[0] & 0x0F) * 4
        total = struct.unpack("!H", packet[2:4])[0]
        tcp = packet[ip_len:total]
        if len(tcp) < 20:
            return
        sport, dport, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if not payload or (sport, dport, seq) in self._seen:
            return
        self._seen.add((sport, dport, seq))
        self.flows[(sport, dport)] += payload

    def of_port(self, port: int) -> dict[tuple[int, int], bytes]:
        return {flow: bytes(data) for flow, data in self.flows.items() if port in flow}
