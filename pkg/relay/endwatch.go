package relay

import (
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// endWatch is one epoll instance, and one goroutine blocked in epoll_wait,
// for the sockets of every session relayed in the kernel. It asks only for
// EPOLLRDHUP (with EPOLLERR and EPOLLHUP, always reported), edge-triggered:
// the wake-ups the kernel sends as each segment arrives carry EPOLLIN,
// which epoll filters out, so a session's bytes wake nothing in user space;
// its peer's FIN, a reset or an error does. A session holds no goroutine
// of its own for this: the watcher calls the session's wake function
// (Kernel.wake), which must not block; it starts a short-lived goroutine
// that handles the end.
type endWatch struct {
	epfd int
	mu   sync.Mutex
	subs map[uint64]func()
	next uint64
	// events counts the events epoll delivered (tests: bytes must not
	// add to it).
	events atomic.Int64
}

var (
	watchOnce sync.Once
	watch     *endWatch
	watchErr  error
)

// sharedEndWatch returns the process's endWatch, starting it once.
func sharedEndWatch() (*endWatch, error) {
	watchOnce.Do(func() {
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			watchErr = err
			return
		}
		watch = &endWatch{epfd: fd, subs: map[uint64]func(){}}
		go watch.loop()
	})
	return watch, watchErr
}

func (w *endWatch) loop() {
	evs := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, evs, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return // cannot happen with a valid epfd; sessions still end by Stop
		}
		w.events.Add(int64(n))
		w.mu.Lock()
		for _, ev := range evs[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if wake := w.subs[tok]; wake != nil {
				wake()
			}
		}
		w.mu.Unlock()
	}
}

// add watches the socket, calling wake on its end.
func (w *endWatch) add(rc sock, wake func()) (uint64, error) {
	w.mu.Lock()
	w.next++
	tok := w.next
	w.subs[tok] = wake
	w.mu.Unlock()
	var cerr error
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
		cerr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err = errors.Join(err, cerr); err != nil {
		w.drop(tok)
		return 0, err
	}
	return tok, nil
}

// remove stops watching the socket. A closed descriptor left the epoll
// set when it was closed; the DEL runs inside Control, which refuses a
// closed one, so it can never hit another socket that reused the number.
func (w *endWatch) remove(rc sock, tok uint64) {
	rc.Control(func(fd uintptr) { unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	w.drop(tok)
}

func (w *endWatch) drop(tok uint64) {
	w.mu.Lock()
	delete(w.subs, tok)
	w.mu.Unlock()
}
