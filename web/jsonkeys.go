package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// UnknownKeyError names a JSON key that is not exactly one of the keys its
// object takes.
type UnknownKeyError struct {
	Path string // dotted, with [i] for array elements: "lines[0].Sku"
}

func (e *UnknownKeyError) Error() string { return fmt.Sprintf("unknown key %q", e.Path) }

// ExactKeys reports the first key in data that is not spelled exactly as
// v's json tags spell it. encoding/json matches keys case-insensitively
// even with DisallowUnknownFields, so {"Amount": 5} would set amount; the
// contract's unknown keys must be refused instead. Data that is not JSON
// is left to the decoder to report.
func ExactKeys(data []byte, v any) error {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil
	}
	return exactKeys(doc, reflect.TypeOf(v), "")
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func exactKeys(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil // decodes itself
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		fields := map[string]reflect.Type{}
		jsonFields(t, fields)
		for k, val := range obj {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				return &UnknownKeyError{Path: p}
			}
			if err := exactKeys(val, ft, p); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := doc.([]any)
		if !ok {
			return nil
		}
		for i, val := range arr {
			if err := exactKeys(val, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		for k, val := range obj {
			if err := exactKeys(val, t.Elem(), path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonFields adds t's fields by their JSON names, embedded structs'
// fields included, as encoding/json sees them.
func jsonFields(t reflect.Type, into map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				jsonFields(ft, into)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		into[name] = f.Type
	}
}
