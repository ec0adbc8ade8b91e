package endpointapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/membrane-net/membrane/api/models"
	"github.com/membrane-net/membrane/cells/apiserver"
)

// FuzzEndpointChangeRequest feeds arbitrary bodies through the decoder and
// the creator: they must never panic, and whatever they refuse is a 4xx.
func FuzzEndpointChangeRequest(f *testing.F) {
	f.Add(`{"container-id":"c","addressing":{"ipv4":"10.0.0.1"}}`)
	f.Add(`{"container-id":"c","addressing":{"ipv6":"fd00::1/128"},"labels":["a=b","k8s:x"]}`)
	f.Add(`{"container-id":"c","k8s-pod-name":"p","k8s-namespace":"n","mac":"02:00:00:00:00:01"}`)
	f.Add(`{"bogus":1}`)
	f.Add(`{"id":-1}`)
	f.Add(`[]`)
	f.Add(`{"container-id":"c"} {}`)
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPut, "/v1/endpoint/0", strings.NewReader(body))
		w := httptest.NewRecorder()
		var req models.EndpointChangeRequest
		if err := apiserver.DecodeJSON(w, r, &req); err != nil {
			if code := apiserver.StatusOf(err); code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
				t.Fatalf("decode error answered %d: %v", code, err)
			}
			return
		}
		ep, err := NewEndpointFromChangeModel(&req)
		if err != nil {
			return
		}
		if ep.ContainerID == "" || len(ep.IPs()) == 0 || ep.RequestLabels.Validate() != nil {
			t.Fatalf("creator accepted an invalid request: %+v", ep)
		}
	})
}
