/* poller_epoll.c -- the epoll backend of the poller interface.
 *
 * The only file that calls epoll_*.  It knows nothing of Python: every
 * function returns 0 (or a count) or -errno.  Events are translated with
 * the selectors module's rules (EpollSelector.select): anything but EPOLLIN
 * wakes writers, anything but EPOLLOUT wakes readers, so errors and hangups
 * reach both directions; the caller masks them with what it registered.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "aloop.h"

int
aloop_poller_open(aloop_poller *p)
{
    p->scratch = NULL;
    p->scratch_cap = 0;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    return p->epfd < 0 ? -errno : 0;
}

void
aloop_poller_close(aloop_poller *p)
{
    if (p->epfd >= 0) {
        close(p->epfd);
        p->epfd = -1;
    }
    PyMem_RawFree(p->scratch);
    p->scratch = NULL;
    p->scratch_cap = 0;
}

static int
poller_ctl(aloop_poller *p, int op, int fd, uint32_t mask)
{
    struct epoll_event ev = {0};
    ev.events = ((mask & ALOOP_READ) ? EPOLLIN : 0) |
                ((mask & ALOOP_WRITE) ? EPOLLOUT : 0) |
                ((mask & ALOOP_ONESHOT) ? EPOLLONESHOT : 0);
    ev.data.fd = fd;
    return epoll_ctl(p->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

int
aloop_poller_add(aloop_poller *p, int fd, uint32_t mask)
{
    return poller_ctl(p, EPOLL_CTL_ADD, fd, mask);
}

int
aloop_poller_modify(aloop_poller *p, int fd, uint32_t mask)
{
    return poller_ctl(p, EPOLL_CTL_MOD, fd, mask);
}

int
aloop_poller_remove(aloop_poller *p, int fd)
{
    return poller_ctl(p, EPOLL_CTL_DEL, fd, 0);
}

int
aloop_poller_wait(aloop_poller *p, aloop_poll_event *out, int max,
                  int timeout_ms)
{
    if (max > p->scratch_cap) {
        void *n = PyMem_RawRealloc(p->scratch,
                                   (size_t)max * sizeof(struct epoll_event));
        if (n == NULL) {
            return -ENOMEM;
        }
        p->scratch = n;
        p->scratch_cap = max;
    }
    struct epoll_event *evs = p->scratch;
    int n = epoll_wait(p->epfd, evs, max, timeout_ms);
    if (n < 0) {
        return -errno;
    }
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events, m = 0;
        if (e & ~(uint32_t)EPOLLIN) {
            m |= ALOOP_WRITE;
        }
        if (e & ~(uint32_t)EPOLLOUT) {
            m |= ALOOP_READ;
        }
        out[i].fd = evs[i].data.fd;
        out[i].events = m;
    }
    return n;
}
