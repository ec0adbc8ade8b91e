package testutil

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for running the datapath programs on crafted packets
// (BPF_PROG_RUN). Checksums are left zero: the programs do not check them.
//
//	pkt := testutil.IPv4(src, dst, 17, testutil.UDP(5353, 53))

// Eth is an Ethernet frame (02:00:00:00:00:02 to 02:00:00:00:00:01) of
// etherType carrying payload.
func Eth(etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 1})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

// IPv4 is an Ethernet frame with an IPv4 packet (TTL 64, no options) of
// protocol proto carrying payload.
func IPv4(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return Eth(0x0800, append(h, payload...))
}

// IPv6 is an Ethernet frame with an IPv6 packet (hop limit 64, no
// extension headers) whose next header is proto, carrying payload.
func IPv6(src, dst netip.Addr, proto uint8, payload []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6] = proto
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return Eth(0x86dd, append(h, payload...))
}

// TCP is a TCP header (no flags, no options) from sport to dport.
func TCP(sport, dport uint16) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	return b
}

// UDP is a UDP header, without payload, from sport to dport.
func UDP(sport, dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], 8)
	return b
}

// ICMP is an ICMP or ICMPv6 message of type typ with echo identifier id.
func ICMP(typ uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	return b
}

// TCP4 is an Ethernet/IPv4/TCP packet from src:sport to dst:dport.
func TCP4(src, dst netip.Addr, sport, dport uint16) []byte {
	return IPv4(src, dst, 6, TCP(sport, dport))
}
