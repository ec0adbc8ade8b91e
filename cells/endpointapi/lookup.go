package endpointapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cilium/statedb"

	"github.com/membrane-net/membrane/cells/apiserver"
	"github.com/membrane-net/membrane/statedb/tables"
)

// errInvalidID: an endpoint ID in none of the API's forms.
var errInvalidID = errors.New("invalid endpoint ID")

// lookup finds an endpoint by any of the API's ID forms: a number,
// container-id:X, cni-attachment-id:CID:IFNAME, pod-name:NS/NAME, ipv4:IP
// or ipv6:IP. Its errors carry their status: 400 for an ID in none of
// these forms, 404 for one no endpoint has.
func lookup(endpoints statedb.Table[*tables.Endpoint], txn statedb.ReadTxn, id string) (*tables.Endpoint, error) {
	q, err := parseEndpointID(id)
	if err != nil {
		return nil, apiserver.WithStatus(http.StatusBadRequest, err)
	}
	ep, _, ok := endpoints.Get(txn, q)
	if !ok {
		return nil, apiserver.Errorf(http.StatusNotFound, "endpoint not found: %s", id)
	}
	return ep, nil
}

// parseEndpointID turns an API endpoint ID into a table query.
func parseEndpointID(id string) (statedb.Query[*tables.Endpoint], error) {
	prefix, rest, hasPrefix := strings.Cut(id, ":")
	if !hasPrefix {
		n, err := strconv.ParseUint(id, 10, 16)
		if err != nil || n < minEndpointID || n > maxEndpointID {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want a number in %d..%d or a prefixed ID (container-id:, cni-attachment-id:, pod-name:, ipv4:, ipv6:)",
				errInvalidID, id, minEndpointID, maxEndpointID)
		}
		return tables.EndpointIDIndex.Query(uint16(n)), nil
	}
	if rest == "" {
		return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: empty value after %q", errInvalidID, id, prefix+":")
	}
	switch prefix {
	case "container-id":
		return tables.EndpointContainerIndex.Query(rest), nil
	case "cni-attachment-id":
		if !strings.Contains(rest, ":") {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want cni-attachment-id:CONTAINER-ID:IFNAME", errInvalidID, id)
		}
		return tables.EndpointCNIAttachmentIndex.Query(rest), nil
	case "pod-name":
		if !strings.Contains(rest, "/") {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: want pod-name:NAMESPACE/NAME", errInvalidID, id)
		}
		return tables.EndpointPodIndex.Query(rest), nil
	case "ipv4", "ipv6":
		a, err := netip.ParseAddr(rest)
		if err != nil || (prefix == "ipv4") != a.Is4() {
			return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: not an %s address", errInvalidID, id, prefix)
		}
		return tables.EndpointIPIndex.Query(a), nil
	}
	return statedb.Query[*tables.Endpoint]{}, fmt.Errorf("%w %q: unknown prefix %q", errInvalidID, id, prefix)
}
