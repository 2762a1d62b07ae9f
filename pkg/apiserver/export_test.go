package apiserver

// BodyBytesInFlight is how much of the body budget requests hold now, for
// tests that must know a request was admitted before they go on.
func BodyBytesInFlight(s *Server) int64 {
	s.bodies.mu.Lock()
	defer s.bodies.mu.Unlock()
	return s.bodies.used
}
