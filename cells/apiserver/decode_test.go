package apiserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	cases := []struct {
		in   string
		code int
		msg  string
	}{
		{`{"name":"a","n":1}`, 0, ""},
		{`{"name":"a","extra":1}`, 400, `unknown field "extra"`},
		{`{"name":`, 400, "invalid JSON"},
		{`{"n":"x"}`, 400, `field "n" must be int`},
		{``, 400, "empty request body"},
		{`{"name":"a"} {"name":"b"}`, 400, "more than one JSON document"},
		{`{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, 413, "larger than"},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(c.in))
		var b body
		err := DecodeJSON(httptest.NewRecorder(), r, &b)
		if c.code == 0 {
			if err != nil {
				t.Errorf("%.40q: %v", c.in, err)
			}
			continue
		}
		if err == nil || StatusOf(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%.40q: got %v (status %d), want %d containing %q", c.in, err, StatusOf(err), c.code, c.msg)
		}
	}
}
