package maps

// FragmentKey is a fragmented datagram at one enforcement point: its
// addresses, protocol and IP ID (IPv4: the 16-bit ID in the first two
// bytes, network order; IPv6: the fragment header's 32-bit ID).
type FragmentKey struct {
	SAddr      [16]byte
	DAddr      [16]byte
	ID         [4]byte
	EndpointID uint16
	Protocol   uint8
	Family     uint8
	Dir        uint8
	Pad        [3]uint8
}

// FragmentValue is what the datagram's first fragment said: its ports
// (network order) and the reason it passed, which its later fragments
// (no L4 header) inherit. Written by the programs only.
type FragmentValue struct {
	LastSeen   uint64 // ns since boot, of the first fragment
	SPort      [2]byte
	DPort      [2]byte
	PolicyPort [2]byte
	Reason     uint8
	Pad        uint8
}
