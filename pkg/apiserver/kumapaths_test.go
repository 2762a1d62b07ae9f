package apiserver_test

import (
	"testing"

	"meshca/pkg/apiserver"
)

// GET /_resources lists the types meshca stores that Kuma has, as Kuma
// describes them (kumactl export lists each); GlobalSecrets answer at
// Kuma's /globalsecrets as well as /global-secrets.
func TestKumaResourceTypes(t *testing.T) {
	env := start(t)
	var got struct {
		Resources []apiserver.ResourceTypeDescription `json:"resources"`
	}
	do(t, "GET", env.Server.URL+"/_resources", "", "").want(t, 200).decode(t, &got)
	want := map[string]apiserver.ResourceTypeDescription{
		"Dataplane":    {Name: "Dataplane", Path: "dataplanes", Scope: "Mesh", ShortName: "dp", SingularDisplayName: "Dataplane", PluralDisplayName: "Dataplanes"},
		"GlobalSecret": {Name: "GlobalSecret", Path: "globalsecrets", Scope: "Global", IncludeInFederation: true, SingularDisplayName: "Global Secret", PluralDisplayName: "Global Secrets"},
		"Mesh":         {Name: "Mesh", Path: "meshes", Scope: "Global", IncludeInFederation: true, ShortName: "m", SingularDisplayName: "Mesh", PluralDisplayName: "Meshes"},
		"Secret":       {Name: "Secret", Path: "secrets", Scope: "Mesh", IncludeInFederation: true, SingularDisplayName: "Secret", PluralDisplayName: "Secrets"},
	}
	if len(got.Resources) != len(want) {
		t.Errorf("%d types, want %d (Kuma's only): %+v", len(got.Resources), len(want), got.Resources)
	}
	for _, r := range got.Resources {
		if r != want[r.Name] {
			t.Errorf("%s = %+v, want %+v", r.Name, r, want[r.Name])
		}
	}

	do(t, "PUT", env.Server.URL+"/globalsecrets/g1", "application/json", `{"type":"GlobalSecret","name":"g1","data":"aGVsbG8="}`).want(t, 201)
	do(t, "GET", env.Server.URL+"/global-secrets/g1", "", "").want(t, 200)
	do(t, "GET", env.Server.URL+"/globalsecrets", "", "").want(t, 200)
	do(t, "DELETE", env.Server.URL+"/globalsecrets/g1", "", "").want(t, 200)
	do(t, "GET", env.Server.URL+"/global-secrets/g1", "", "").want(t, 404)
}
