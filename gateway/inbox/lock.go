package inbox

import (
	"context"
	"sync"
)

// userLocks serializes one process's appends per user. Every user has a
// lock of its own, so an append stuck for its whole deadline (retrying
// through a leader election) holds up only later appends of the same user.
// A lock is made when an append for its user arrives and dropped when the
// last append holding or awaiting it leaves: the map holds only the users
// with appends in flight.
//
// A lock is a channel with room for one token: holding it is having put
// the token in. So a waiter can give up when its context ends, which a
// sync.Mutex cannot do.
type userLocks struct {
	mu sync.Mutex // guards m and every userLock's users
	m  map[string]*userLock
}

type userLock struct {
	token chan struct{} // full while the lock is held
	users int           // appends holding or awaiting the lock
}

// lock takes user's lock, or returns ctx's error once ctx ends first,
// holding nothing. An ended ctx never takes the lock, even a free one: the
// caller's deadline has passed, and all it could do is give up.
func (u *userLocks) lock(ctx context.Context, user string) (*userLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u.mu.Lock()
	ul := u.m[user]
	if ul == nil {
		if u.m == nil {
			u.m = make(map[string]*userLock)
		}
		ul = &userLock{token: make(chan struct{}, 1)}
		u.m[user] = ul
	}
	ul.users++
	u.mu.Unlock()
	select {
	case ul.token <- struct{}{}:
		return ul, nil
	case <-ctx.Done():
		u.leave(user, ul)
		return nil, ctx.Err()
	}
}

// unlock releases a lock that lock returned for user.
func (u *userLocks) unlock(user string, ul *userLock) {
	<-ul.token
	u.leave(user, ul)
}

func (u *userLocks) leave(user string, ul *userLock) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if ul.users--; ul.users == 0 {
		delete(u.m, user)
	}
}

// len is how many users have a lock: those with appends in flight.
func (u *userLocks) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.m)
}
