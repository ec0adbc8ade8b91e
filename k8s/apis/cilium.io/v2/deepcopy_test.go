package v2_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	v2 "github.com/membrane-net/membrane/k8s/apis/cilium.io/v2"
)

// A deep copy shares nothing with the original. This is what goes wrong
// when a slice, map or pointer field is added and zz_generated.deepcopy.go
// is not regenerated (the old DeepCopyInto copies the new field's header,
// not its contents). Every registered type is filled completely, copied,
// and every field of the copy changed; the original must not move.
// (`make deepcopy-check` compares the whole file with the generator's.)
func TestDeepCopySharesNothing(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v2.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	pkg := reflect.TypeFor[v2.CiliumEndpoint]().PkgPath()
	n := 0
	for kind, typ := range scheme.KnownTypes(v2.SchemeGroupVersion) {
		if typ.PkgPath() != pkg {
			continue // metav1's WatchEvent, ListOptions, ...
		}
		n++
		obj := reflect.New(typ)
		fill(obj.Elem())
		orig := obj.Interface().(runtime.Object)
		before := mustJSON(t, orig)
		cp := orig.DeepCopyObject()
		if !reflect.DeepEqual(orig, cp) {
			t.Errorf("%s: the copy differs from the original", kind)
			continue
		}
		mutate(reflect.ValueOf(cp).Elem())
		if after, err := json.Marshal(orig); err != nil || string(after) != before {
			t.Errorf("%s: changing the copy changed the original (regenerate: go generate ./k8s/...)\nbefore: %s\nafter:  %s (%v)", kind, before, after, err)
		}
	}
	if n != 10 {
		t.Errorf("checked %d registered types, want 10 (five kinds and their lists)", n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	rawJSONType    = reflect.TypeFor[apiextensionsv1.JSON]()
	objectMetaType = reflect.TypeFor[metav1.ObjectMeta]()
)

// fill sets every exported field reachable from v: two elements in each
// slice and map, a value behind each pointer.
func fill(v reflect.Value) {
	switch {
	case v.Type() == rawJSONType:
		v.Set(reflect.ValueOf(apiextensionsv1.JSON{Raw: []byte(`{"endpointSelector":{}}`)}))
		return
	case v.Type() == objectMetaType:
		v.Set(reflect.ValueOf(metav1.ObjectMeta{Name: "n", Namespace: "ns", Labels: map[string]string{"a": "b"}}))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		for _, k := range []string{"k1", "k2"} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e)
			v.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), e)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	default:
		panic("fill: add a case for " + v.Type().String())
	}
}

// mutate changes every value reachable from v, in place: through a
// shared slice, map or pointer the change shows in the original.
func mutate(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "!")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 1)
	case reflect.Pointer:
		if !v.IsNil() {
			mutate(v.Elem())
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // raw JSON: blank it
			copy(v.Bytes(), strings.Repeat(" ", v.Len()))
			return
		}
		for i := range v.Len() {
			mutate(v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			mutate(e)
			v.SetMapIndex(k, e)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				mutate(v.Field(i))
			}
		}
	}
}
