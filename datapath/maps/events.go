package maps

// Event is a record of the events ring buffer.
type Event struct {
	Timestamp   uint64
	IfIndex     uint32
	EndpointID  uint16
	Dir         uint8
	Reason      uint8
	SrcIdentity uint32
	DstIdentity uint32
	SAddr       [16]byte
	DAddr       [16]byte
	SPort       [2]byte
	DPort       [2]byte
	Protocol    uint8
	Family      uint8
	Type        uint8
	Pad         uint8
}

// Event types.
const (
	EventDrop    = 1
	EventVerdict = 2
)
