package meshctl

import (
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// writeRawOutput prints an API answer as JSON or YAML when --output asks
// for one and reports done=true; for the table form (or an empty
// --output) it prints nothing and the caller draws its table.
func writeRawOutput(w io.Writer, output string, raw []byte) (done bool, err error) {
	switch output {
	case OutputJSON:
		_, err = fmt.Fprintln(w, string(raw))
		return true, err
	case OutputYAML:
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return true, err
		}
		_, err = w.Write(y)
		return true, err
	case OutputTable, "":
		return false, nil
	default:
		return true, fmt.Errorf("--output %q: must be table, yaml or json", output)
	}
}
