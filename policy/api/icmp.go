package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ICMP families of an icmps field.
const (
	FamilyIPv4 = "IPv4"
	FamilyIPv6 = "IPv6"
)

// maxICMPFields bounds the fields of one icmps entry (Cilium's limit).
const maxICMPFields = 40

// ICMPv4Types and ICMPv6Types are the ICMP type names an icmps field may
// use (the names Cilium accepts; matched case-insensitively).
var (
	ICMPv4Types = map[string]uint8{
		"EchoReply":              0,
		"DestinationUnreachable": 3,
		"Redirect":               5,
		"Echo":                   8,
		"EchoRequest":            8,
		"RouterAdvertisement":    9,
		"RouterSelection":        10,
		"TimeExceeded":           11,
		"ParameterProblem":       12,
		"Timestamp":              13,
		"TimestampReply":         14,
		"Photuris":               40,
		"ExtendedEchoRequest":    42,
		"ExtendedEchoReply":      43,
	}
	ICMPv6Types = map[string]uint8{
		"DestinationUnreachable":                 1,
		"PacketTooBig":                           2,
		"TimeExceeded":                           3,
		"ParameterProblem":                       4,
		"EchoRequest":                            128,
		"EchoReply":                              129,
		"MulticastListenerQuery":                 130,
		"MulticastListenerReport":                131,
		"MulticastListenerDone":                  132,
		"RouterSolicitation":                     133,
		"RouterAdvertisement":                    134,
		"NeighborSolicitation":                   135,
		"NeighborAdvertisement":                  136,
		"RedirectMessage":                        137,
		"RouterRenumbering":                      138,
		"ICMPNodeInformationQuery":               139,
		"ICMPNodeInformationResponse":            140,
		"InverseNeighborDiscoverySolicitation":   141,
		"InverseNeighborDiscoveryAdvertisement":  142,
		"HomeAgentAddressDiscoveryRequest":       144,
		"HomeAgentAddressDiscoveryReply":         145,
		"MobilePrefixSolicitation":               146,
		"MobilePrefixAdvertisement":              147,
		"DuplicateAddressRequestCodeSuffix":      157,
		"DuplicateAddressConfirmationCodeSuffix": 158,
		"ExtendedEchoRequest":                    160,
		"ExtendedEchoReply":                      161,
	}
)

// family returns the canonical family name ("" is IPv4, as in Cilium).
func family(s string) (string, error) {
	switch {
	case s == "" || strings.EqualFold(s, FamilyIPv4):
		return FamilyIPv4, nil
	case strings.EqualFold(s, FamilyIPv6):
		return FamilyIPv6, nil
	}
	return "", fmt.Errorf("unknown family %q (want IPv4 or IPv6)", s)
}

// Proto returns the IP protocol the field matches: ICMP (1) for IPv4,
// ICMPv6 (58) for IPv6 (the numbers of statedb's ProtoICMP/ProtoICMPv6).
func (f ICMPField) Proto() (uint8, error) {
	fam, err := family(f.Family)
	if err != nil {
		return 0, err
	}
	if fam == FamilyIPv6 {
		return protoICMPv6, nil
	}
	return protoICMP, nil
}

// TypeNumber returns the ICMP type the field matches: the number given, or
// the number of the name given in the field's family.
func (f ICMPField) TypeNumber() (uint8, error) {
	n, _, err := f.resolve()
	return n, err
}

// resolve returns the type number and its canonical JSON form: a number
// stays a number, a name gets its table spelling.
func (f ICMPField) resolve() (uint8, json.RawMessage, error) {
	fam, err := family(f.Family)
	if err != nil {
		return 0, nil, err
	}
	if len(f.Type) == 0 || string(f.Type) == "null" {
		return 0, nil, errors.New("type is required (a number 0-255 or a name such as EchoRequest)")
	}
	var s string
	if err := json.Unmarshal(f.Type, &s); err != nil {
		var num json.Number
		if err := json.Unmarshal(f.Type, &num); err != nil {
			return 0, nil, fmt.Errorf("type must be a number (0-255) or a name, not %s", f.Type)
		}
		s = num.String()
	}
	s = strings.TrimSpace(s)
	if isDigits(s) {
		n, err := strconv.ParseUint(s, 10, 8)
		if err != nil {
			return 0, nil, fmt.Errorf("type %s is out of range (0-255)", s)
		}
		return uint8(n), json.RawMessage(strconv.FormatUint(n, 10)), nil
	}
	names := ICMPv4Types
	if fam == FamilyIPv6 {
		names = ICMPv6Types
	}
	for name, n := range names {
		if strings.EqualFold(name, s) {
			canon, _ := json.Marshal(name)
			return n, canon, nil
		}
	}
	return 0, nil, fmt.Errorf("unknown %s ICMP type %q (use a number 0-255 or a name such as EchoRequest, EchoReply, DestinationUnreachable, TimeExceeded)", fam, s)
}
