package crds_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	rawJSONType    = reflect.TypeFor[apiextensionsv1.JSON]()
	typeMetaType   = reflect.TypeFor[metav1.TypeMeta]()
	objectMetaType = reflect.TypeFor[metav1.ObjectMeta]()
)

// checker compares a Go type with a schema, reporting each disagreement
// with the kind and the field's path ("status.networking.addressing[].ipv4").
type checker struct {
	t    *testing.T
	kind string
}

func (c *checker) errorf(path, format string, args ...any) {
	c.t.Helper()
	c.t.Errorf("%s %s: %s", c.kind, path, fmt.Sprintf(format, args...))
}

func (c *checker) check(path string, typ reflect.Type, s apiextensionsv1.JSONSchemaProps) {
	c.t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ == rawJSONType {
		if s.Type != "object" || s.XPreserveUnknownFields == nil || !*s.XPreserveUnknownFields {
			c.errorf(path, "raw JSON in Go: the schema must be an object with x-kubernetes-preserve-unknown-fields, not %q", s.Type)
		}
		return
	}
	want := map[reflect.Kind]string{
		reflect.String: "string", reflect.Bool: "boolean",
		reflect.Int: "integer", reflect.Int32: "integer", reflect.Int64: "integer",
		reflect.Uint8: "integer", reflect.Uint16: "integer", reflect.Uint32: "integer", reflect.Uint64: "integer",
		reflect.Slice: "array", reflect.Map: "object", reflect.Struct: "object",
	}[typ.Kind()]
	if want == "" {
		c.errorf(path, "Go type %s: teach the test its schema type", typ)
		return
	}
	if s.Type != want {
		c.errorf(path, "Go %s is a %s in JSON, the schema says %q", typ, want, s.Type)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		if s.Items == nil || s.Items.Schema == nil {
			c.errorf(path, "array without an items schema")
			return
		}
		c.check(path+"[]", typ.Elem(), *s.Items.Schema)
	case reflect.Map:
		if typ.Key().Kind() != reflect.String || s.AdditionalProperties == nil || s.AdditionalProperties.Schema == nil {
			c.errorf(path, "a Go map needs string keys and a schema with additionalProperties")
			return
		}
		c.check(path+"{}", typ.Elem(), *s.AdditionalProperties.Schema)
	case reflect.Struct:
		c.checkStruct(path, typ, s)
	}
}

func (c *checker) checkStruct(path string, typ reflect.Type, s apiextensionsv1.JSONSchemaProps) {
	c.t.Helper()
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	seen := map[string]bool{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			if f.Type != typeMetaType {
				c.errorf(path, "inline %s: teach the test about it", f.Type)
				continue
			}
			for _, p := range []string{"apiVersion", "kind"} {
				seen[p] = true
				if s.Properties[p].Type != "string" {
					c.errorf(join(p), "the schema must declare it as a string")
				}
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		seen[name] = true
		prop, ok := s.Properties[name]
		if !ok {
			c.errorf(join(name), "Go field %s.%s is not in the schema: the API server would drop it", typ.Name(), f.Name)
			continue
		}
		if slices.Contains(s.Required, name) && slices.Contains(strings.Split(opts, ","), "omitempty") {
			c.errorf(join(name), "the schema requires it but Go field %s.%s is omitempty", typ.Name(), f.Name)
		}
		if f.Type == objectMetaType {
			if prop.Type != "object" {
				c.errorf(join(name), "metadata must be an object")
			}
			continue
		}
		c.check(join(name), f.Type, prop)
	}
	for name := range s.Properties {
		if !seen[name] && notInGo[c.kind+" "+join(name)] == "" {
			c.errorf(join(name), "the schema declares it but %s has no such field (add it, or list it in notInGo with the reason)", typ.Name())
		}
	}
	for _, name := range s.Required {
		if !seen[name] {
			c.errorf(join(name), "required by the schema, absent from %s", typ.Name())
		}
	}
}

// resolve checks that a printer column's JSONPath (.a.b[0].c, with `\.`
// inside a name and [...] for an array element) names a field of the
// schema. Paths into metadata are left to the API server.
func resolve(s *apiextensionsv1.JSONSchemaProps, jsonPath string) error {
	var names []string
	var cur strings.Builder
	p := strings.TrimPrefix(jsonPath, ".")
	for i := 0; i < len(p); i++ {
		switch {
		case p[i] == '\\' && i+1 < len(p):
			i++
			cur.WriteByte(p[i])
		case p[i] == '.':
			names = append(names, cur.String())
			cur.Reset()
		case p[i] == '[':
			end := strings.IndexByte(p[i:], ']')
			if end < 0 {
				return fmt.Errorf("%s: unterminated [", jsonPath)
			}
			names = append(names, cur.String(), "[]")
			cur.Reset()
			i += end
			if i+1 < len(p) && p[i+1] == '.' {
				i++
			}
		default:
			cur.WriteByte(p[i])
		}
	}
	if cur.Len() > 0 {
		names = append(names, cur.String())
	}
	if len(names) > 0 && names[0] == "metadata" {
		return nil
	}
	for i, n := range names {
		switch {
		case n == "[]":
			if s.Type != "array" || s.Items == nil || s.Items.Schema == nil {
				return fmt.Errorf("%s: %s is not an array", jsonPath, strings.Join(names[:i], "."))
			}
			s = s.Items.Schema
		default:
			prop, ok := s.Properties[n]
			if !ok {
				return fmt.Errorf("%s: the schema has no %q at %s", jsonPath, n, strings.Join(names[:i], "."))
			}
			s = &prop
		}
	}
	return nil
}
