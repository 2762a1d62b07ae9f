// Package kumactl holds the wire-format conformance test of meshca's HTTP
// API against Kuma's kumactl: testdata/kuma-2.14.3.json is what kumactl
// 2.14.3 sent and what a Kuma 2.14.3 control plane answered for a run of
// kumactl commands (see README.md, "Kuma compatibility"); the test replays
// those requests against meshca and checks that it accepts them and answers
// with the shapes kumactl parses. No Kuma binary is needed.
package kumactl
