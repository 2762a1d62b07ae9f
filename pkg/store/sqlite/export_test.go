package sqlite

// QueueState exposes queueState to the external tests.
func QueueState(s *Store) (enqueued, waiting int, closed bool) { return s.queueState() }
