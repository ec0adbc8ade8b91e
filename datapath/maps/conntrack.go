package maps

// ConntrackKey is a flow as seen at one enforcement point.
type ConntrackKey struct {
	SAddr    [16]byte
	DAddr    [16]byte
	SPort    [2]byte
	DPort    [2]byte
	Protocol uint8
	Family   uint8
	Dir      uint8
	Pad      uint8
}

// ConntrackValue is a tracked flow.
type ConntrackValue struct {
	LastSeen   uint64 // ns since boot
	EndpointID uint16
	Flags      uint16
	Pad        uint32
}
