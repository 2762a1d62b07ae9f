package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// DecodeStrict decodes JSON into v and refuses what v does not declare: every
// unknown field, however deeply nested, is reported with its full path
// ("conf.auth.awsCredentials.token: unknown field"), as are values of the
// wrong type and keys given twice in one object (see [DuplicateKeys]). Paths are rooted at path. Empty or null input leaves v as it is.
// Every CA backend decodes its conf with it.
func DecodeStrict(js []byte, v any, path string) error {
	trimmed := bytes.TrimSpace(js)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	ve := &ValidationError{}
	DuplicateKeys(ve, trimmed, path)
	if err := ve.OrNil(); err != nil {
		return err
	}
	UnknownFields(ve, trimmed, reflect.TypeOf(v), path)
	if err := ve.OrNil(); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return FieldErr(JoinPath(path, jsonFieldPath(reflect.TypeOf(v), te.Field)), "must be %s, got %s", kindName(te.Type), te.Value)
		}
		return PrefixErr(path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return PrefixErr(path, errors.New("unexpected data after the object"))
	}
	return nil
}

// UnknownFields records in v every key of raw, in nested objects and lists
// too, that typ does not declare, as "path.key: unknown field". Fields of
// embedded structs count as the outer struct's, as encoding/json has them.
func UnknownFields(v *ValidationError, raw json.RawMessage, typ reflect.Type, path string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.Slice, reflect.Array:
		if typ.Elem().Kind() == reflect.Uint8 {
			return
		}
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return // type errors are reported by the real decoding
		}
		for i, it := range items {
			UnknownFields(v, it, typ.Elem(), path+"["+itoa(i)+"]")
		}
		return
	case reflect.Struct:
	default:
		return
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return
	}
	fields := map[string]reflect.Type{}
	collectFields(typ, fields)
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := fields[k]
		if !ok {
			v.Addf(JoinPath(path, k), "unknown field")
			continue
		}
		UnknownFields(v, obj[k], ft, JoinPath(path, k))
	}
}

func collectFields(typ reflect.Type, into map[string]reflect.Type) {
	for i := range typ.NumField() {
		sf := typ.Field(i)
		tag := sf.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			t := sf.Type
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if t.Kind() == reflect.Struct {
				collectFields(t, into)
				continue
			}
		}
		if name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		into[name] = sf.Type
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// jsonFieldPath turns the path encoding/json reports for a type error into
// the path the user wrote: it names embedded structs by their Go type
// ("MeshSpec.mtls.backends"), which the JSON does not have.
func jsonFieldPath(typ reflect.Type, field string) string {
	var out []string
	for _, seg := range strings.Split(field, ".") {
		for typ != nil && (typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map) {
			typ = typ.Elem()
		}
		if typ == nil || typ.Kind() != reflect.Struct {
			out = append(out, seg)
			typ = nil
			continue
		}
		fields := map[string]reflect.Type{}
		collectFields(typ, fields)
		if ft, ok := fields[seg]; ok {
			out = append(out, seg)
			typ = ft
			continue
		}
		if sf, ok := typ.FieldByName(seg); ok && sf.Anonymous {
			typ = sf.Type // an embedded struct: not in the JSON
			continue
		}
		out = append(out, seg)
		typ = nil
	}
	return strings.Join(out, ".")
}
