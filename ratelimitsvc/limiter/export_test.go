package limiter

// Queued returns how many requests wait for a flusher, for tests that need a batch to form.
func Queued(l *Limiter) int {
	l.batch.mu.Lock()
	defer l.batch.mu.Unlock()
	return len(l.batch.queue)
}

// MaxInFlight and MaxBatchRequests expose the coalescing limits to tests.
const (
	MaxInFlight      = maxInFlight
	MaxBatchRequests = maxBatchRequests
)
