//go:build race

package sds_test

const raceEnabled = true
