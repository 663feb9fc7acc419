package inbox

import "context"

// HoldUser takes user's append lock, as an append stuck in its retries
// would, until release is called.
func HoldUser(tb interface{ Fatalf(string, ...any) }, l *Log, user string) (release func()) {
	ul, err := l.locks.lock(context.Background(), user)
	if err != nil {
		tb.Fatalf("HoldUser(%s): %v", user, err)
	}
	return func() { l.locks.unlock(user, ul) }
}

// LockedUsers is how many users have an append lock.
func LockedUsers(l *Log) int { return l.locks.len() }

// BeforeSend makes f run before each publish attempt of l's appends.
func BeforeSend(l *Log, f func(context.Context)) { l.beforeSend = f }
