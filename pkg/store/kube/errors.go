package kube

import (
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"meshca/pkg/store"
)

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("kubernetes store: closed")

// ErrForbidden wraps a request the API server's authorization (RBAC)
// refused; the message names the verb, the resource and the namespace.
var ErrForbidden = errors.New("forbidden by the Kubernetes API server (RBAC)")

var errDuplicateKey = errors.New("another object holds the same record key")

// apiError maps an error of the API server for verb on loc to the store's
// sentinels, keeping the server's message.
func apiError(verb string, loc location, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case apierrors.IsNotFound(err):
		if verb == "create" && loc.namespace != "" {
			// The only thing a create does not find is the namespace.
			return fmt.Errorf("%s %s: %w (does the namespace exist?)", verb, loc, err)
		}
		return fmt.Errorf("%s %s: %w: %w", verb, loc, store.ErrNotFound, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s %s: %w: %w", verb, loc, store.ErrAlreadyExists, err)
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s %s: %w: %w", verb, loc, store.ErrConflict, err)
	case apierrors.IsForbidden(err):
		return forbidden(verb, loc, err)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%s %s: the API server refused the object: %w", verb, loc, err)
	}
	return fmt.Errorf("%s %s: %w", verb, loc, err)
}

func forbidden(verb string, loc location, err error) error {
	ns := "cluster-wide"
	if loc.namespace != "" {
		ns = "in namespace " + loc.namespace
	}
	res := loc.src.gvr.Resource
	if g := loc.src.gvr.Group; g != "" {
		res += "." + g
	}
	return fmt.Errorf("%w: may not %s %s %s: grant it in meshca-cp's ClusterRole/Role (meshctl install control-plane prints one): %v",
		ErrForbidden, verb, res, ns, reason(err))
}

func reason(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}
