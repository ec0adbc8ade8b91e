package maps

// MetricsKey counts by endpoint, direction and reason.
type MetricsKey struct {
	EndpointID uint16
	Dir        uint8
	Reason     uint8
}

// MetricsValue is one CPU's count.
type MetricsValue struct {
	Packets uint64
	Bytes   uint64
}
