package postgres

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"meshca/pkg/store"
)

// decodeNotification reads what json.Unmarshal reads, on every payload encode
// writes and on hand-made ones that end like a spec but are not one.
func TestDecodeNotificationIsJSON(t *testing.T) {
	now := time.Unix(1700000000, 123)
	var payloads []string
	for _, r := range []store.Record{
		{Key: store.Key{Type: "DataplaneIdentity", Mesh: "default", Name: "dp-1"}, Version: 3, Spec: []byte("\x00\x01binary sealed\xff")},
		{Key: store.Key{Type: "Dataplane", Mesh: "m", Name: "a"}, Version: 1, Spec: []byte(`{"networking":{"address":"1.2.3.4"}}`),
			Labels: map[string]string{"spec": "QUJD", "k": `v","spec":"QUJD`}},
		{Key: store.Key{Type: "Mesh", Name: "m"}, Version: 2},                                             // no spec
		{Key: store.Key{Type: "Mesh", Name: "m"}, Version: 2, Labels: map[string]string{"spec": "x"}},     // labels last
		{Key: store.Key{Type: "Secret", Mesh: "m", Name: "big"}, Spec: []byte(strings.Repeat("s", 9000))}, // omitted
	} {
		r.CreationTime, r.ModificationTime = now, now
		for _, kind := range []store.EventKind{store.EventCreated, store.EventDeleted} {
			full, note, err := encode(4, store.Event{Kind: kind, Record: r})
			if err != nil {
				t.Fatal(err)
			}
			payloads = append(payloads, `{"commit":9,`+full[1:], `{"commit":9,`+note[1:])
		}
	}
	payloads = append(payloads,
		`{"barrier":"QUJD"}`,
		`{"seq":1,"type":"a,\"spec\":\"QUJD"}`,
		`{"seq":1,"labels":{"a":"b","spec":"QUJD"}}`,
		`{"seq":1,"labels":{"a":"b"},"spec":"QUJD"}`,
		`{"seq":1,"spec":"QUJD","spec":"RUZH"}`,
		`{"seq":1,"spec":"QUJ"}`,             // not base64: refused
		`{"seq":1,,"spec":"QUJD"}`,           // not JSON
		`{"seq":1 "spec":"QUJD"}`,            // not JSON
		`{"seq":1,"labels":{,"spec":"QUJD"}`, // not JSON
		`,"spec":"QUJD"}`,
		`"spec":"QUJD"}`,
		`{"seq":1,"spec":"\/UJD"}`, // an escape: decoded whole
	)
	for _, p := range payloads {
		var want notification
		wantErr := json.Unmarshal([]byte(p), &want)
		got, err := decodeNotification(p)
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%s: error %v, json.Unmarshal's %v", p, err, wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", p, got, want)
		}
	}
}
