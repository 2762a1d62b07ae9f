package promtext

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `# HELP x help
# TYPE x counter
x 3
y{a="1",b="2"} 4 1700000000000
y{a="1",b="3"} 5
z{a="2"} 1e+03
`
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.Get("x") != 3 || s.Get(`z{a="2"}`) != 1000 || s.Get("missing") != 0 {
		t.Errorf("samples %v", s)
	}
	if got := s.SumWhere("y", `a="1"`); got != 9 {
		t.Errorf("SumWhere = %v", got)
	}
	if got := s.ByLabel("y", "b"); got["2"] != 4 || got["3"] != 5 {
		t.Errorf("ByLabel = %v", got)
	}
	if _, err := Parse(strings.NewReader("bad\n")); err == nil {
		t.Error("a line without a value parsed")
	}
}
