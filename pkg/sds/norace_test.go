//go:build !race

package sds_test

const raceEnabled = false
