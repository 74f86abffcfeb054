package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
)

// maxBody is the largest request body storepay reads.
const maxBody = 1 << 20

// decode reads exactly one JSON object into v: at most 1 MiB, declared as
// JSON if declared at all, no unknown fields, no key twice, no trailing
// data, no string past its length limit (see checkLengths). Its errors
// are problems that name the field but never echo a value (a value might
// be a card number).
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return decodeProblem(err)
	}
	if p := checkContentType(r, data); p != nil {
		return p
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return typeProblem(data, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem(http.StatusBadRequest, "invalid_json", "the body must hold a single JSON object")
	}
	var uk *UnknownKeyError
	if err := ExactKeys(data, v); errors.As(err, &uk) {
		return problem(http.StatusBadRequest, "unknown_field", fmt.Sprintf("unknown field %q is not part of this request (keys are case-sensitive)", uk.Path))
	}
	if k := duplicateKey(data); k != "" {
		return problem(http.StatusBadRequest, "duplicate_key", fmt.Sprintf("%q appears twice in one object; a request must say each thing once", k))
	}
	if p := checkLengths(reflect.ValueOf(v), ""); p != nil {
		return p
	}
	return nil
}

func decodeProblem(err error) *Problem {
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &tooBig):
		return problem(http.StatusBadRequest, "body_too_large", fmt.Sprintf("the body exceeds %d bytes", maxBody))
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "the body"
		}
		return problem(http.StatusBadRequest, "invalid_json", fmt.Sprintf("%s must be %s", field, jsonType(typeErr.Type.Kind().String())))
	case errors.As(err, &syntaxErr):
		return problem(http.StatusBadRequest, "invalid_json", fmt.Sprintf("malformed JSON at byte %d", syntaxErr.Offset))
	case errors.Is(err, io.EOF):
		return problem(http.StatusBadRequest, "invalid_json", "the body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem(http.StatusBadRequest, "invalid_json", "the body ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return problem(http.StatusBadRequest, "unknown_field", strings.TrimPrefix(err.Error(), "json: ")+" is not part of this request")
	}
	return problem(http.StatusBadRequest, "invalid_json", "the body is not valid JSON for this request")
}

func jsonType(kind string) string {
	switch kind {
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return "a " + kind
}

// typeProblem is decodeProblem for a value of the wrong type, told with
// the value's full path (encoding/json's Field drops array indexes:
// "lines.quantity" for lines[1].quantity) and, for an integer too large
// for its field, "out of range" rather than "must be an integer".
func typeProblem(data []byte, err error) *Problem {
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) || typeErr.Type == nil {
		return decodeProblem(err)
	}
	field := pathAt(data, typeErr.Offset)
	if field == "" {
		field = typeErr.Field
	}
	if field == "" {
		field = "the body"
	}
	kind := typeErr.Type.Kind().String()
	if lit, ok := strings.CutPrefix(typeErr.Value, "number "); ok && jsonType(kind) == "an integer" && !strings.ContainsAny(lit, ".eE") {
		return problem(http.StatusBadRequest, "invalid_json", fmt.Sprintf("%s is out of range", field))
	}
	return problem(http.StatusBadRequest, "invalid_json", fmt.Sprintf("%s must be %s", field, jsonType(kind)))
}

// pathAt names the JSON value that ends at byte offset of data, as
// "lines[1].quantity". It walks data's tokens; a document it cannot walk
// gives "".
func pathAt(data []byte, offset int64) string {
	type level struct {
		array bool
		key   string
		index int
		after bool // a key was read, its value comes next
	}
	var stack []level
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	path := func() string {
		var b strings.Builder
		for _, l := range stack {
			switch {
			case l.array && l.index >= 0:
				fmt.Fprintf(&b, "[%d]", l.index)
			case l.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(l.key)
			}
		}
		return b.String()
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, level{})
			case '[':
				stack = append(stack, level{array: true, index: -1})
			default:
				stack = stack[:top]
				top--
				if dec.InputOffset() >= offset {
					if top >= 0 && !stack[top].array {
						stack[top].after = false
					}
					return path()
				}
				if top >= 0 && !stack[top].array {
					stack[top].after = false
				}
				continue
			}
			if top >= 0 {
				if stack[top].array {
					stack[top].index++
				} else {
					stack[top].after = false
				}
			}
			if dec.InputOffset() >= offset {
				return path() // the value that starts here
			}
			continue
		default:
			if top >= 0 && !stack[top].array && !stack[top].after {
				stack[top].key, stack[top].after = fmt.Sprint(t), true
				continue
			}
			if top >= 0 {
				if stack[top].array {
					stack[top].index++
				} else {
					stack[top].after = false
				}
			}
			if dec.InputOffset() >= offset {
				return path()
			}
		}
	}
}
