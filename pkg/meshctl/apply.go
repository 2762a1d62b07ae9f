package meshctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"meshca/pkg/api"
)

// sourceDoc is one document to apply and where it was written.
type sourceDoc struct {
	file string
	doc  api.Document
}

func (s sourceDoc) String() string {
	return fmt.Sprintf("%s (%s, document %d)", describeResource(s.doc.Resource), s.file, s.doc.Index)
}

func describeResource(r api.Resource) string {
	m := r.GetMeta()
	return fmt.Sprintf("%s %q", m.Type, m.Name)
}

func newApplyCmd(app *App) *cobra.Command {
	var (
		files  []string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|- [-f FILE...]",
		Short: "Create or update resources from YAML or JSON files",
		Long: `Create or update resources from YAML or JSON files, in the Universal form
(type, name, mesh, ...) or the Kubernetes form (apiVersion, kind, metadata, spec;
core/v1 Secrets of type system.kuma.io/secret with label kuma.io/mesh).

Every document of every file is read and checked first; then the resources are
applied in order. Applying stops at the first failing resource: the ones
before it stay applied.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return usageError{errors.New("at least one -f FILE (or -f - for standard input) is required")}
			}
			docs, err := readDocuments(cmd.InOrStdin(), files)
			if err != nil {
				return err
			}
			client, err := app.Client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var applied []string
			for _, sd := range docs {
				if !dryRun && client.Unchanged(cmd.Context(), sd.doc.Resource) {
					fmt.Fprintf(out, "%s unchanged\n", describeResource(sd.doc.Resource))
					applied = append(applied, describeResource(sd.doc.Resource))
					continue
				}
				created, err := client.Apply(cmd.Context(), sd.doc.Resource, dryRun)
				if err != nil {
					return &ApplyError{Doc: sd.String(), Applied: applied, DryRun: dryRun, Err: mapFields(sd.doc, err)}
				}
				switch {
				case dryRun:
					fmt.Fprintf(out, "%s (dry run) valid\n", describeResource(sd.doc.Resource))
				case created:
					fmt.Fprintf(out, "%s created\n", describeResource(sd.doc.Resource))
				default:
					fmt.Fprintf(out, "%s configured\n", describeResource(sd.doc.Resource))
				}
				applied = append(applied, describeResource(sd.doc.Resource))
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "file", "f", nil, "file to apply, - for standard input (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate on the server only, change nothing")
	return cmd
}

// readDocuments decodes every file and checks every document's structure, so
// that a mistake anywhere is reported before anything is applied.
func readDocuments(stdin io.Reader, files []string) ([]sourceDoc, error) {
	var out []sourceDoc
	for _, f := range files {
		var (
			data []byte
			err  error
			name = f
		)
		if f == "-" {
			name = "stdin"
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		docs, err := api.DecodeDocuments(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; nothing was applied", name, err)
		}
		for _, d := range docs {
			out = append(out, sourceDoc{file: name, doc: d})
		}
	}
	for _, sd := range out {
		if err := sd.doc.Resource.Validate(); err != nil {
			var ve *api.ValidationError
			if errors.As(err, &ve) {
				err = &invalidError{causes: ve.Causes}
			}
			return nil, &ApplyError{Doc: sd.String(), Err: mapFields(sd.doc, err)}
		}
	}
	return out, nil
}

// ApplyError reports the document apply stopped at and what was applied
// before it.
type ApplyError struct {
	// Doc names the failing document: `Mesh "default" (mesh.yaml, document 2)`.
	Doc string
	// Applied lists the resources applied before it, which stay applied.
	Applied []string
	DryRun  bool
	Err     error
}

func (e *ApplyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", e.Doc, e.Err)
	switch {
	case e.DryRun:
	case len(e.Applied) == 0:
		b.WriteString("\nnothing was applied")
	default:
		fmt.Fprintf(&b, "\n%d resource(s) before it were applied and stay applied: %s", len(e.Applied), strings.Join(e.Applied, ", "))
	}
	return b.String()
}

func (e *ApplyError) Unwrap() error { return e.Err }

// mapFields rewrites the field paths of a validation error (server or local)
// into the paths of the form the document was written in, so the user finds
// the field in their file: in the Kubernetes form `mtls.backends[0]...`
// becomes `spec.mtls.backends[0]...`.
func mapFields(doc api.Document, err error) error {
	if doc.Form != api.FormKubernetes {
		return err
	}
	typ := doc.Resource.GetMeta().Type
	var ae *APIError
	if errors.As(err, &ae) {
		out := *ae
		out.Causes = mapCauses(typ, ae.Causes)
		return &out
	}
	var ie *invalidError
	if errors.As(err, &ie) {
		return &invalidError{causes: mapCauses(typ, ie.causes)}
	}
	return err
}

// invalidError is a document refused by local validation, rendered like the
// server's answer: a summary line, then one `field: message` line per cause.
type invalidError struct{ causes []api.FieldError }

func (e *invalidError) Error() string {
	var b strings.Builder
	b.WriteString("Resource is not valid")
	for _, c := range e.causes {
		b.WriteByte('\n')
		if c.Field != "" {
			b.WriteString(c.Field + ": ")
		}
		b.WriteString(c.Message)
	}
	return b.String()
}

func mapCauses(typ string, causes []api.FieldError) []api.FieldError {
	out := make([]api.FieldError, len(causes))
	for i, c := range causes {
		out[i] = api.FieldError{Field: KubeField(typ, c.Field), Message: c.Message}
	}
	return out
}

// KubeField maps a Universal field path of a resource of type typ to where
// the Kubernetes form holds it (see api.KubeField).
func KubeField(typ, field string) string { return api.KubeField(typ, field) }
