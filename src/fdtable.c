/* fdtable.c -- fd -> reader/writer watchers, indexed by fd.
 *
 * The table grows on demand (only for fds that are open) and owns one
 * reference to each watcher's obj.
 * A slot's `armed`, `oneshot` and `in_poller` mirror the poller's
 * registration, so the loop calls the poller only when it must change
 * (loop_sync_slot in loop.c).  Pure C: no Python calls except the decrefs
 * in clear(), which first detach the slots.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "aloop.h"

aloop_fdslot *
aloop_fdtable_ensure(aloop_fdtable *t, int fd)
{
    if (fd < 0) {
        return NULL;
    }
    if (fd >= t->cap) {
        /* Grow only for an open fd: a bogus huge number must not make us
         * allocate gigabytes (the poller would refuse it anyway). */
        if (fcntl(fd, F_GETFD) < 0) {
            return NULL;
        }
        int64_t ncap = t->cap ? t->cap : 64;
        while (ncap <= fd) {
            ncap *= 2;
        }
        aloop_fdslot *n =
            PyMem_RawRealloc(t->slots, (size_t)ncap * sizeof(*n));
        if (n == NULL) {
            return NULL;
        }
        memset(n + t->cap, 0, (size_t)(ncap - t->cap) * sizeof(*n));
        t->slots = n;
        t->cap = (int)(ncap > INT32_MAX ? INT32_MAX : ncap);
    }
    return &t->slots[fd];
}

void
aloop_fdtable_clear(aloop_fdtable *t)
{
    aloop_fdslot *slots = t->slots;
    int cap = t->cap;
    t->slots = NULL;
    t->cap = 0;
    t->nregistered = 0;
    for (int i = 0; i < cap; i++) {
        Py_XDECREF(slots[i].reader.obj);
        Py_XDECREF(slots[i].writer.obj);
    }
    PyMem_RawFree(slots);
}

int
aloop_fdtable_traverse(aloop_fdtable *t, visitproc visit, void *arg)
{
    for (int i = 0; i < t->cap; i++) {
        Py_VISIT(t->slots[i].reader.obj);
        Py_VISIT(t->slots[i].writer.obj);
    }
    return 0;
}
