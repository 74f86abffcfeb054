package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// defaultMaxString bounds every string a request body carries unless its
// field's `max` tag says otherwise: no text from outside is kept, logged
// or answered at any length (a 1 MiB emergency-stop state once became a
// 1 MiB audit row).
const defaultMaxString = 255

// checkContentType refuses a body declared as anything but JSON (415):
// a form or a text body would otherwise be read as JSON by luck. A
// request without Content-Type, or without a body, is not refused:
// nothing in it is misread.
func checkContentType(r *http.Request, body []byte) *Problem {
	ct := r.Header.Get("Content-Type")
	if ct == "" || len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))) {
		return nil
	}
	return problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
}

// duplicateKey returns the path of the first key that appears twice in
// one JSON object of data, or "". encoding/json keeps the last value of a
// repeated key, so {"amount":null,"amount":900} would charge 900 while a
// reviewer (or a proxy's check) read the first: a request that says two
// things is refused instead. Data that is not JSON gives "" (the decoder
// reports it).
func duplicateKey(data []byte) string {
	type level struct {
		array  bool
		index  int
		keys   map[string]bool
		key    string
		hasKey bool
	}
	var stack []*level
	path := func(last string) string {
		var b strings.Builder
		for _, l := range stack[:len(stack)-1] {
			if l.array {
				fmt.Fprintf(&b, "[%d]", l.index)
			} else {
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(l.key)
			}
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(last)
		return b.String()
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	value := func() { // a value ended in the current container
		if n := len(stack); n > 0 {
			if stack[n-1].array {
				stack[n-1].index++
			} else {
				stack[n-1].hasKey = false
			}
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		n := len(stack)
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &level{keys: map[string]bool{}})
			case '[':
				stack = append(stack, &level{array: true})
			default:
				stack = stack[:n-1]
				value()
			}
		case string:
			if n > 0 && !stack[n-1].array && !stack[n-1].hasKey {
				l := stack[n-1]
				if l.keys[t] {
					return path(t)
				}
				l.keys[t], l.key, l.hasKey = true, t, true
				continue
			}
			value()
		default:
			value()
		}
	}
}

// checkLengths refuses a string field longer than its `max` tag (in
// characters; defaultMaxString without one), named by its path.
func checkLengths(v reflect.Value, path string) *Problem {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			fv := v.Field(i)
			if fv.Kind() == reflect.String {
				limit := defaultMaxString
				if m, err := strconv.Atoi(f.Tag.Get("max")); err == nil {
					limit = m
				}
				if utf8.RuneCountInString(fv.String()) > limit {
					return problem(http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s is too long: at most %d characters", p, limit))
				}
				continue
			}
			if pr := checkLengths(fv, p); pr != nil {
				return pr
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if pr := checkLengths(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); pr != nil {
				return pr
			}
		}
	case reflect.String:
		if utf8.RuneCountInString(v.String()) > defaultMaxString {
			return problem(http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s is too long: at most %d characters", path, defaultMaxString))
		}
	}
	return nil
}
