package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Strict decoding. A policy document is first read into generic values
// (map[string]any, []any, string, json.Number, bool, nil), rejecting
// duplicate keys; conform then checks that generic tree against the Go
// types of this package, field by field, so that every unknown field and
// every value of the wrong type is reported with its full path
// ("ingress[0].toPorts[0].prots: unknown field"), and field names match
// exactly as in Kubernetes (encoding/json would accept "EndpointSelector"
// for "endpointSelector"). Only a conforming tree is decoded into a Rule.

// maxDepth bounds nesting: a rule is less than ten levels deep.
const maxDepth = 64

// readJSON reads one JSON value into generic values, numbers as
// json.Number, rejecting duplicate object keys and trailing data.
func readJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := readValue(dec, "", 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("unexpected data after the JSON document (offset %d)", dec.InputOffset())
	}
	return v, nil
}

func readValue(dec *json.Decoder, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, tokenErr(dec, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, tokenErr(dec, err)
			}
			key, _ := kt.(string)
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("%s: duplicate field %q", orTop(path), key)
			}
			v, err := readValue(dec, joinPath(path, key), depth+1)
			if err != nil {
				return nil, err
			}
			m[key] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, tokenErr(dec, err)
		}
		return m, nil
	case '[':
		l := []any{}
		for i := 0; dec.More(); i++ {
			v, err := readValue(dec, indexPath(path, i), depth+1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, tokenErr(dec, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("invalid JSON (offset %d): unexpected %q", dec.InputOffset(), d)
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func tokenErr(dec *json.Decoder, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("invalid JSON: unexpected end of the JSON document")
	}
	return fmt.Errorf("invalid JSON (offset %d): %w", dec.InputOffset(), err)
}

var (
	rawMessageType   = reflect.TypeFor[json.RawMessage]()
	ruleLabelType    = reflect.TypeFor[RuleLabel]()
	portProtocolType = reflect.TypeFor[PortProtocol]()
	icmpFieldType    = reflect.TypeFor[ICMPField]()
)

// conformer checks generic values against Go types, reporting problems
// under one location (At).
type conformer struct {
	ps *problems
	at string
	// mistyped is set when a value had the wrong type (and was dropped):
	// the decoded rule is then not worth validating. Unknown fields are
	// dropped too, but the rest of the rule still means what it says.
	mistyped bool
}

// typeErr reports a value of the wrong type.
func (c *conformer) typeErr(path, format string, args ...any) {
	c.mistyped = true
	c.ps.addf(c.at, path, format, args...)
}

// conform checks v against t and returns v rewritten into the form
// encoding/json decodes into t. Two conveniences Cilium users rely on are
// rewritten here: a port written as a YAML/JSON number ("port: 80") and a
// rule label written as a "source:key=value" string.
func (c *conformer) conform(v any, t reflect.Type, path string) any {
	if v == nil {
		return nil // null is "unset", as in Kubernetes
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType {
		return v // Unsupported fields: reported by Validate if present
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == ruleLabelType {
			if s, ok := v.(string); ok {
				l, err := ParseRuleLabel(s)
				if err != nil {
					c.mistyped = true
					c.ps.add(c.at, path, err)
					return nil
				}
				return map[string]any{"key": l.Key, "value": l.Value, "source": l.Source}
			}
		}
		m, ok := v.(map[string]any)
		if !ok {
			c.typeErr(path, "must be an object, not %s", describe(v))
			return nil
		}
		fields := structFields(t)
		for _, key := range slices.Sorted(maps.Keys(m)) {
			f, ok := fields.byName[key]
			if !ok {
				c.ps.add(c.at, joinPath(path, key), unknownField(key, fields.names))
				delete(m, key)
				continue
			}
			fpath := joinPath(path, key)
			switch {
			case t == portProtocolType && key == "port":
				m[key] = c.portValue(m[key], fpath)
			case t == icmpFieldType && key == "type":
				m[key] = c.icmpTypeValue(m[key], fpath)
			default:
				m[key] = c.conform(m[key], f.Type, fpath)
			}
		}
		return m
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			c.typeErr(path, "must be a list, not %s", describe(v))
			return nil
		}
		for i := range l {
			l[i] = c.conform(l[i], t.Elem(), indexPath(path, i))
		}
		return l
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			c.typeErr(path, "must be an object of strings, not %s", describe(v))
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(m)) {
			m[key] = c.conform(m[key], t.Elem(), joinPath(path, key))
		}
		return m
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.typeErr(path, "must be a string, not %s (quote it in YAML)", describe(v))
			return nil
		}
		return v
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.typeErr(path, "must be true or false, not %s", describe(v))
			return nil
		}
		return v
	case reflect.Int32:
		n, ok := v.(json.Number)
		if !ok {
			c.typeErr(path, "must be a number, not %s", describe(v))
			return nil
		}
		if _, err := strconv.ParseInt(n.String(), 10, 32); err != nil {
			c.typeErr(path, "must be an integer, not %s", n)
			return nil
		}
		return v
	}
	c.typeErr(path, "internal error: cannot check a %s", t)
	return nil
}

// portValue accepts a port as a string or an integer (YAML "port: 80").
func (c *conformer) portValue(v any, path string) any {
	switch v := v.(type) {
	case nil, string:
		return v
	case json.Number:
		if _, err := strconv.ParseUint(v.String(), 10, 64); err != nil {
			c.typeErr(path, "must be a port number (1-65535) or a service name, not %s", v)
			return nil
		}
		return v.String()
	}
	c.typeErr(path, "must be a port number or a service name, not %s", describe(v))
	return nil
}

// icmpTypeValue accepts an ICMP type as an integer or a string.
func (c *conformer) icmpTypeValue(v any, path string) any {
	switch v.(type) {
	case nil, string, json.Number:
		return v
	}
	c.typeErr(path, "must be an ICMP type number (0-255) or name, not %s", describe(v))
	return nil
}

// describe names a generic value's kind for messages.
func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + v.String()
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func unknownField(key string, known []string) error {
	if s := suggest(key, known); s != "" {
		return fmt.Errorf("unknown field (did you mean %q?)", s)
	}
	return fmt.Errorf("unknown field (known fields here: %s)", strings.Join(known, ", "))
}

// suggest returns the known name closest to key: same letters in another
// case, or at most two edits away.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k
		}
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fieldSet is a struct's fields by exact JSON name.
type fieldSet struct {
	byName map[string]reflect.StructField
	names  []string
}

var fieldCache sync.Map // reflect.Type -> *fieldSet

func structFields(t reflect.Type) *fieldSet {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{byName: map[string]reflect.StructField{}}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fs.byName[name] = f
		fs.names = append(fs.names, name)
	}
	fieldCache.Store(t, fs)
	return fs
}

// decodeInto decodes a conforming generic value into out.
func decodeInto(v any, out any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, out)
}
