/* loop.c -- the Loop object: state, scheduling and the run loop.
 *
 * One iteration (loop_run_once) keeps BaseEventLoop._run_once's order:
 * drop cancelled timers (compacting when more than half of at least 100
 * are cancelled); poll with timeout 0 if anything is ready or the loop is
 * stopping, else until the earliest timer; queue I/O callbacks in event
 * order; queue the timers due before now + clock resolution; run exactly
 * the entries queued at that point, skipping cancelled handles.
 *
 * Invariants: `running` is true only between a run_forever setup and its
 * cleanup (run_forever's own, or 3.13's _run_forever_setup/_cleanup that
 * a subclass calls, or its `_thread_id` assignments, the stdlib's
 * is_running()); run_forever restores the running loop, asyncgen hooks and
 * origin tracking on every exit path, and leaves them alone when it
 * refuses to start.
 * The ready queue, timer heap and fd table are only mutated with the GIL
 * held; the GIL is released only around the poller wait.  `polling` is set
 * (under the GIL) before the wait, so call_soon_threadsafe writes to the
 * eventfd exactly when the loop may be asleep.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

/* ------------------------------------------------------------ small helpers
 */

double
aloop_loop_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Same arithmetic as time.monotonic(), so the values compare equal. */
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    if (ns % 1000000000 == 0) {
        return (double)(ns / 1000000000);
    }
    return (double)ns / 1e9;
}

char *
aloop_loop_read_buf(LoopObj *loop)
{
    if (loop->read_buf == NULL) {
        loop->read_buf = PyMem_RawMalloc(ALOOP_READ_BUF_SIZE);
        if (loop->read_buf == NULL) {
            PyErr_NoMemory();
        }
    }
    return loop->read_buf;
}

Py_ssize_t
aloop_direct_read_size(int fd, Py_ssize_t last, Py_ssize_t limit)
{
    int queued;
    if (last < ALOOP_DIRECT_READ || limit < ALOOP_DIRECT_READ ||
        ioctl(fd, FIONREAD, &queued) != 0 || queued < ALOOP_DIRECT_READ) {
        return 0;
    }
    return queued < limit ? queued : limit;
}

PyObject *
aloop_errno_error(int neg_errno)
{
    errno = -neg_errno;
    return PyErr_SetFromErrno(PyExc_OSError);
}

int
aloop_loop_check_closed(LoopObj *loop)
{
    if (loop->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

int
aloop_loop_check_thread(LoopObj *loop)
{
    if (loop->running && PyThread_get_thread_ident() != loop->thread_id) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop "
                        "other than the current one");
        return -1;
    }
    return 0;
}

/* coroutines.iscoroutine(cb) or coroutines.iscoroutinefunction(cb) */
int
aloop_loop_is_coroutine(LoopObj *loop, PyObject *cb)
{
    aloop_state *st = loop->state;
    PyObject *r = PyObject_CallOneArg(st->iscoroutine, cb);
    int is_coro = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (is_coro == 0) {
        r = PyObject_CallOneArg(st->iscoroutinefunction, cb);
        is_coro = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
    }
    return is_coro;
}

int
aloop_loop_check_callback(LoopObj *loop, PyObject *cb, const char *meth)
{
    int is_coro = aloop_loop_is_coroutine(loop, cb);
    if (is_coro < 0) {
        return -1;
    }
    if (is_coro) {
        PyErr_Format(PyExc_TypeError, "coroutines cannot be used with %s()",
                     meth);
        return -1;
    }
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError,
                     "a callable object was expected by %s(), got %R", meth,
                     cb);
        return -1;
    }
    return 0;
}

int
aloop_call_exception_handler(aloop_state *st, PyObject *loop,
                             PyObject *context)
{
    PyObject *exc = PyDict_GetItemWithError(context, st->str_exception);
    if (exc == NULL && PyErr_Occurred()) {
        return -1;
    }
    PyObject *handled = NULL;
    if (exc != NULL) {
        handled = PyErr_GetHandledException();
        PyErr_SetHandledException(exc);
    }
    PyObject *r = PyObject_CallMethodOneArg(
        loop, st->str_call_exception_handler, context);
    if (exc != NULL) {
        PyErr_SetHandledException(handled);
        Py_XDECREF(handled);
    }
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int
aloop_loop_call_exception_handler(LoopObj *loop, PyObject *context)
{
    return aloop_call_exception_handler(loop->state, (PyObject *)loop,
                                        context);
}

int
aloop_loop_report_exception(LoopObj *loop, const char *message)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    aloop_state *st = loop->state;
    PyObject *exc = aloop_fetch_exception();
    PyObject *ctx = Py_BuildValue("{OsOO}", st->str_message, message,
                                  st->str_exception, exc);
    Py_DECREF(exc);
    if (ctx == NULL) {
        return -1;
    }
    int rc = aloop_loop_call_exception_handler(loop, ctx);
    Py_DECREF(ctx);
    return rc;
}

/* handle._cancelled: 1, 0 or -1. */
static int
loop_handle_cancelled(LoopObj *loop, PyObject *handle)
{
    if (Py_IS_TYPE(handle, loop->state->HandleType) ||
        Py_IS_TYPE(handle, loop->state->TimerHandleType)) {
        return ((HandleObj *)handle)->cancelled;
    }
    PyObject *c = PyObject_GetAttr(handle, loop->state->str_cancelled_attr);
    int truth = c ? PyObject_IsTrue(c) : -1;
    Py_XDECREF(c);
    return truth;
}

/* Queue a handle unless it is cancelled (BaseEventLoop._add_callback). */
int
aloop_loop_push_handle(LoopObj *loop, PyObject *handle)
{
    int cancelled = loop_handle_cancelled(loop, handle);
    if (cancelled != 0) {
        return cancelled < 0 ? -1 : 0;
    }
    int rc = aloop_readyq_push(&loop->ready, handle, NULL, 0);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    return 0;
}

void
aloop_loop_wakeup(LoopObj *loop)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(loop->wakeup_fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
}

static void
loop_drain_wakeup(LoopObj *loop)
{
    uint64_t v;
    ssize_t n;
    do {
        n = read(loop->wakeup_fd, &v, sizeof(v));
    } while (n < 0 && errno == EINTR);
    loop->wakeup_pending = false;
}

static bool
watcher_set(const aloop_watcher *w)
{
    return w->obj || w->fn;
}

/* Record `mask`, the directions of the slot's watchers. */
static void
loop_note_mask(LoopObj *loop, aloop_fdslot *slot, uint32_t mask)
{
    loop->fds.nregistered += (mask != 0) - (slot->mask != 0);
    slot->mask = mask;
}

/* Make the poller's registration of `fd` match its watchers; 0 or -errno
 * (the slot then keeps its previous state). */
static int
loop_sync_slot(LoopObj *loop, int fd, aloop_fdslot *slot)
{
    const aloop_watcher *r = &slot->reader, *w = &slot->writer;
    bool has_r = watcher_set(r), has_w = watcher_set(w);
    uint32_t mask = (has_r ? ALOOP_READ : 0) | (has_w ? ALOOP_WRITE : 0);
    bool oneshot = mask && (!has_r || r->oneshot) && (!has_w || w->oneshot);
    /* No poller call when nothing changes, nor when a disarmed oneshot
     * registration loses its last watcher: it stays, parked. */
    if (mask != slot->armed || (mask && oneshot != slot->oneshot)) {
        aloop_poller *p = &loop->poller;
        if (mask == 0) {
            /* The fd may already be closed: the kernel dropped it then. */
            (void)aloop_poller_remove(p, fd);
            slot->in_poller = false;
        } else {
            uint32_t flags = mask | (oneshot ? ALOOP_ONESHOT : 0);
            int rc;
            if (slot->in_poller) {
                /* ENOENT: the fd was closed, its number reused */
                rc = aloop_poller_modify(p, fd, flags);
                if (rc == -ENOENT) {
                    rc = aloop_poller_add(p, fd, flags);
                }
            } else {
                rc = aloop_poller_add(p, fd, flags);
                if (rc == -EEXIST) {
                    rc = aloop_poller_modify(p, fd, flags);
                }
            }
            if (rc < 0) {
                return rc;
            }
            slot->in_poller = true;
        }
        slot->armed = mask;
        slot->oneshot = oneshot;
    }
    loop_note_mask(loop, slot, mask);
    return 0;
}

/* A removal whose poller call failed (the fd was closed: EBADF) happens
 * all the same, and, as in the stdlib, whose selector unregisters the key
 * when modify() fails, the other direction's watcher goes too: it is
 * returned, to be released once the slot is consistent.  The poller's
 * registration is forgotten, so the next watcher on this fd number starts
 * with an ADD. */
static PyObject *
loop_forget_registration(LoopObj *loop, int fd, aloop_fdslot *slot)
{
    (void)aloop_poller_remove(&loop->poller, fd);
    slot->in_poller = false;
    slot->armed = 0;
    slot->oneshot = false;
    aloop_watcher *other =
        watcher_set(&slot->reader) ? &slot->reader : &slot->writer;
    PyObject *obj = other->obj;
    *other = (aloop_watcher){0};
    loop_note_mask(loop, slot, 0);
    return obj;
}

static int
loop_set_watcher(LoopObj *loop, int fd, uint32_t which, PyObject *obj,
                 aloop_event_fn fn, bool oneshot, PyObject **old)
{
    *old = NULL;
    errno = 0;
    aloop_fdslot *slot = aloop_fdtable_ensure(&loop->fds, fd);
    if (slot == NULL) {
        if (obj == NULL && fn == NULL) {
            return 0; /* nothing to remove */
        }
        return errno ? -errno : -ENOMEM;
    }
    aloop_watcher *w = (which == ALOOP_READ) ? &slot->reader : &slot->writer;
    aloop_watcher prev = *w;
    w->obj = Py_XNewRef(obj);
    w->fn = fn;
    w->oneshot = oneshot;
    int rc = loop_sync_slot(loop, fd, slot);
    PyObject *dropped = NULL;
    if (rc < 0 && !watcher_set(w)) {
        dropped = loop_forget_registration(loop, fd, slot);
    } else if (rc < 0) {
        Py_XDECREF(w->obj); /* ours: no Python code can run here */
        *w = prev;
        return rc;
    }
    *old = prev.obj;
    Py_XDECREF(dropped); /* last: it may run Python code */
    return rc;
}

int
aloop_loop_set_watcher(LoopObj *loop, int fd, uint32_t which, PyObject *obj,
                       aloop_event_fn fn, PyObject **old)
{
    return loop_set_watcher(loop, fd, which, obj, fn, false, old);
}

int
aloop_loop_set_oneshot_watcher(LoopObj *loop, int fd, uint32_t which,
                               PyObject *obj, aloop_event_fn fn,
                               PyObject **old)
{
    return loop_set_watcher(loop, fd, which, obj, fn, true, old);
}

int
aloop_loop_rearm(LoopObj *loop, int fd)
{
    aloop_fdslot *slot = aloop_fdtable_get(&loop->fds, fd);
    return slot ? loop_sync_slot(loop, fd, slot) : 0;
}

/* -------------------------------------------------------------- run loop */

/* Poll, retrying on EINTR with a timeout recomputed from the deadline. */
static int
loop_poll(LoopObj *loop, double timeout, int *nevents)
{
    int max = loop->fds.nregistered + 1;
    if (max > loop->events_cap) {
        int ncap = max < 64 ? 64 : max * 2;
        aloop_poll_event *n =
            PyMem_RawRealloc(loop->events, (size_t)ncap * sizeof(*n));
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        loop->events = n;
        loop->events_cap = ncap;
    }
    double deadline = timeout >= 0 ? aloop_loop_time() + timeout : 0;
    for (;;) {
        int ms = -1;
        if (timeout >= 0) {
            double ceil_ms = ceil(timeout * 1e3);
            ms = ceil_ms > (double)INT32_MAX ? INT32_MAX : (int)ceil_ms;
        }
        int n;
        if (ms != 0) {
            /* From here on call_soon_threadsafe wakes the wait.  Python
             * code run since the caller saw an empty ready queue (an
             * overridden time(), a __del__) may have let another thread
             * queue a callback unannounced: then do not sleep. */
            loop->polling = true;
            if (loop->ready.len) {
                ms = 0;
            }
        }
        if (ms == 0) {
            loop->polling = false;
            n = aloop_poller_wait(&loop->poller, loop->events,
                                  loop->events_cap, 0);
        } else {
            Py_BEGIN_ALLOW_THREADS n = aloop_poller_wait(
                &loop->poller, loop->events, loop->events_cap, ms);
            Py_END_ALLOW_THREADS loop->polling = false;
        }
        if (n >= 0) {
            *nevents = n;
            return 0;
        }
        if (n != -EINTR) {
            aloop_errno_error(n);
            return -1;
        }
        /* PEP 475, as the stdlib's selector: run the signal handlers and
         * wait again for what is left of the timeout.  Work they queued
         * (asyncio.Runner's SIGINT handler calls call_soon_threadsafe)
         * is found by the check above; a loop.stop() of theirs waits, as
         * in the stdlib, for the wait to end. */
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (timeout >= 0) {
            timeout = deadline - aloop_loop_time();
            if (timeout < 0) {
                timeout = 0;
            }
        }
    }
}

static int
loop_queue_watcher(LoopObj *loop, int fd, aloop_watcher *w, uint32_t events)
{
    if (w->fn != NULL) {
        int rc = aloop_readyq_push(&loop->ready, w->obj, w->fn, events);
        if (rc < 0) {
            aloop_errno_error(rc);
            return -1;
        }
        return 0;
    }
    if (w->obj == NULL) {
        return 0;
    }
    int cancelled = loop_handle_cancelled(loop, w->obj);
    if (cancelled == 0) {
        return aloop_loop_push_handle(loop, w->obj);
    }
    if (cancelled < 0) {
        return -1;
    }
    /* A reader/writer Handle cancelled while registered: removed, as the
     * stdlib's _process_events does, or level-triggered polling would
     * report the fd on every iteration.  (A failed removal forgets the
     * registration anyway.) */
    PyObject *old = NULL;
    (void)aloop_loop_set_watcher(loop, fd, events, NULL, NULL, &old);
    Py_XDECREF(old);
    return 0;
}

static int
loop_process_events(LoopObj *loop, int n)
{
    for (int i = 0; i < n; i++) {
        int fd = loop->events[i].fd;
        if (fd == loop->wakeup_fd) {
            loop_drain_wakeup(loop);
            continue;
        }
        aloop_fdslot *slot = aloop_fdtable_get(&loop->fds, fd);
        if (slot == NULL) {
            continue;
        }
        uint32_t ev = loop->events[i].events & slot->armed;
        if (ev && slot->oneshot) {
            /* The kernel disarmed it.  Each oneshot watcher, when it runs,
             * removes itself or re-arms (and so re-arms the other
             * direction's watcher, if any). */
            slot->armed = 0;
        }
        if ((ev & ALOOP_READ) &&
            loop_queue_watcher(loop, fd, &slot->reader, ALOOP_READ) < 0) {
            return -1;
        }
        /* Removing a cancelled reader may have run code (its callback's
         * deallocation) that grew the table: look the slot up again. */
        slot = aloop_fdtable_get(&loop->fds, fd);
        if ((ev & ALOOP_WRITE) && slot != NULL &&
            loop_queue_watcher(loop, fd, &slot->writer, ALOOP_WRITE) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
loop_drop_cancelled_timers(LoopObj *loop)
{
    aloop_timerheap *th = &loop->timers;
    if (th->len > ALOOP_MIN_SCHEDULED_TIMER_HANDLES &&
        (double)loop->timer_cancelled_count / (double)th->len >
            ALOOP_MIN_CANCELLED_TIMER_HANDLES_FRACTION) {
        aloop_timerheap_compact(th);
        loop->timer_cancelled_count = 0;
        return;
    }
    while (th->len && th->items[0]->cancelled) {
        loop->timer_cancelled_count--;
        HandleObj *t = aloop_timerheap_pop(th);
        t->scheduled = false;
        Py_DECREF(t);
    }
}

/* self.time(), as the stdlib's scheduler reads the clock: the C clock
 * unless time() is overridden (a virtual clock, a mock).  0 or -1. */
static int
loop_now(LoopObj *loop, double *now)
{
    int overridden = aloop_loop_overrides(loop, ALOOP_HOOK(ALOOP_HOOK_TIME));
    if (overridden <= 0) {
        *now = aloop_loop_time();
        return overridden;
    }
    PyObject *r =
        PyObject_CallMethodNoArgs((PyObject *)loop, loop->state->str_time);
    *now = r ? PyFloat_AsDouble(r) : -1.0;
    Py_XDECREF(r);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

int
aloop_loop_now(LoopObj *loop, double *now)
{
    return loop_now(loop, now);
}

int
aloop_loop_warn_slow(LoopObj *loop, PyObject *handle, double dt)
{
    aloop_state *st = loop->state;
    PyObject *fmt = PyObject_CallOneArg(st->format_handle, handle);
    if (fmt == NULL) {
        return -1;
    }
    PyObject *logger = aloop_logger(st->base_events);
    PyObject *r =
        logger ? PyObject_CallMethod(logger, "warning", "sOd",
                                     "Executing %s took %.3f seconds", fmt, dt)
               : NULL;
    Py_XDECREF(logger);
    Py_DECREF(fmt);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int
loop_run_debug(LoopObj *loop, HandleObj *h)
{
    Py_XSETREF(loop->current_handle, Py_NewRef((PyObject *)h));
    double t0, t1;
    if (loop_now(loop, &t0) < 0) {
        return -1;
    }
    int rc = aloop_handle_run(h);
    Py_CLEAR(loop->current_handle);
    if (rc < 0 || loop_now(loop, &t1) < 0) {
        return -1;
    }
    double dt = t1 - t0;
    return dt < loop->slow_callback_duration
               ? 0
               : aloop_loop_warn_slow(loop, (PyObject *)h, dt);
}

/* Run one queued entry; the entry's reference is consumed. */
static int
loop_run_entry(LoopObj *loop, aloop_ready_entry e)
{
    int rc = 0;
    if (e.fn != NULL) {
        rc = e.fn(loop, e.obj, e.events);
    } else if (Py_IS_TYPE(e.obj, loop->state->HandleType) ||
               Py_IS_TYPE(e.obj, loop->state->TimerHandleType)) {
        HandleObj *h = (HandleObj *)e.obj;
        if (!h->cancelled) {
            rc = loop->debug ? loop_run_debug(loop, h) : aloop_handle_run(h);
        }
    } else {
        /* A foreign handle, e.g. from _add_callback: use its protocol. */
        PyObject *c = PyObject_GetAttr(e.obj, loop->state->str_cancelled_attr);
        int cancelled = c ? PyObject_IsTrue(c) : -1;
        Py_XDECREF(c);
        if (cancelled == 0) {
            PyObject *r =
                PyObject_CallMethodNoArgs(e.obj, loop->state->str_run);
            rc = r ? 0 : -1;
            Py_XDECREF(r);
        } else if (cancelled < 0) {
            rc = -1;
        }
    }
    Py_XDECREF(e.obj);
    return rc;
}

static int
loop_run_once(LoopObj *loop)
{
    loop_drop_cancelled_timers(loop);

    double timeout = -1;
    if (loop->ready.len || loop->stopping) {
        timeout = 0;
    } else if (loop->timers.len) {
        double now;
        if (loop_now(loop, &now) < 0) {
            return -1;
        }
        timeout = loop->timers.items[0]->when - now;
        if (timeout > ALOOP_MAX_SELECT_TIMEOUT) {
            timeout = ALOOP_MAX_SELECT_TIMEOUT;
        } else if (!(timeout >= 0)) { /* negative or NaN */
            timeout = 0;
        }
    }

    int n;
    if (loop_poll(loop, timeout, &n) < 0 || loop_process_events(loop, n) < 0) {
        return -1;
    }
    /* Like the eval loop between bytecodes: a spinning loop whose callbacks
     * are all C stays interruptible (Ctrl-C, SIGALRM). */
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }

    /* Timers due before now + resolution join the ready queue. */
    double end_time;
    if (loop_now(loop, &end_time) < 0) {
        return -1;
    }
    end_time += loop->clock_resolution;
    aloop_timerheap *th = &loop->timers;
    while (th->len) {
        HandleObj *t = th->items[0];
        if (t->when >= end_time) {
            break;
        }
        t = aloop_timerheap_pop(th);
        t->scheduled = false;
        int rc = t->cancelled
                     ? 0
                     : aloop_readyq_push(&loop->ready, (PyObject *)t, NULL, 0);
        Py_DECREF(t);
        if (rc < 0) {
            aloop_errno_error(rc);
            return -1;
        }
    }

    /* Run only what is queued now; new entries wait for the next poll. */
    size_t ntodo = loop->ready.len;
    for (size_t i = 0; i < ntodo && loop->ready.len; i++) {
        if (loop_run_entry(loop, aloop_readyq_pop(&loop->ready)) < 0) {
            return -1;
        }
    }
    aloop_readyq_shrink(&loop->ready);
    return 0;
}

/* ------------------------------------------------- run_forever bookkeeping */

static int
loop_check_running(LoopObj *loop)
{
    if (loop->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "This event loop is already running");
        return -1;
    }
    PyObject *running = PyObject_CallMethodNoArgs(
        loop->state->events, loop->state->str_get_running_loop);
    if (running == NULL) {
        return -1;
    }
    int other = running != Py_None;
    Py_DECREF(running);
    if (other) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot run the event loop while another loop is "
                        "running");
        return -1;
    }
    return 0;
}

static int
loop_set_origin_tracking(LoopObj *loop, bool enabled)
{
    PyObject *r = PyObject_CallMethodOneArg(
        (PyObject *)loop, loop->state->str_set_coroutine_origin_tracking,
        enabled ? Py_True : Py_False);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static void
loop_run_forever_cleanup(LoopObj *loop);

/* BaseEventLoop._run_forever_setup.  A failed check (closed, this loop or
 * another already running) changes nothing, so a loop running further up
 * the stack stays running; a later failure undoes what was done. */
static int
loop_run_forever_setup(LoopObj *loop)
{
    aloop_state *st = loop->state;
    if (aloop_loop_check_closed(loop) < 0 || loop_check_running(loop) < 0 ||
        loop_set_origin_tracking(loop, loop->debug) < 0) {
        return -1;
    }
    PyObject *hooks = PyObject_CallNoArgs(st->get_asyncgen_hooks);
    if (hooks == NULL) {
        goto error;
    }
    Py_XSETREF(loop->old_agen_hooks, hooks);
    loop->thread_id = PyThread_get_thread_ident();
    loop->running = true;

    PyObject *firstiter =
        PyObject_GetAttr((PyObject *)loop, st->str_asyncgen_firstiter_hook);
    PyObject *finalizer =
        PyObject_GetAttr((PyObject *)loop, st->str_asyncgen_finalizer_hook);
    PyObject *r = NULL;
    if (firstiter != NULL && finalizer != NULL) {
        PyObject *args[2] = {firstiter, finalizer};
        PyObject *kw = PyTuple_Pack(2, st->str_firstiter, st->str_finalizer);
        if (kw != NULL) {
            r = PyObject_Vectorcall(st->set_asyncgen_hooks, args, 0, kw);
            Py_DECREF(kw);
        }
    }
    Py_XDECREF(firstiter);
    Py_XDECREF(finalizer);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    r = PyObject_CallMethodOneArg(st->events, st->str_set_running_loop,
                                  (PyObject *)loop);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    return 0;
error:
    loop_run_forever_cleanup(loop);
    return -1;
}

/* BaseEventLoop._run_forever_cleanup: undo loop_run_forever_setup; 0, or
 * -1 with an exception. */
static int
loop_run_forever_undo(LoopObj *loop)
{
    aloop_state *st = loop->state;
    loop->stopping = false;
    loop->running = false;
    loop->thread_id = 0;
    PyObject *r = PyObject_CallMethodOneArg(st->events,
                                            st->str_set_running_loop, Py_None);
    if (r == NULL || loop_set_origin_tracking(loop, false) < 0) {
        Py_XDECREF(r);
        return -1;
    }
    Py_DECREF(r);
    PyObject *hooks = loop->old_agen_hooks;
    loop->old_agen_hooks = NULL;
    if (hooks == NULL) {
        return 0;
    }
    /* sys.set_asyncgen_hooks(*hooks): 3.13 code may have set any iterable
     * as _old_agen_hooks */
    PyObject *args = PySequence_Tuple(hooks);
    Py_DECREF(hooks);
    r = args ? PyObject_Call(st->set_asyncgen_hooks, args, NULL) : NULL;
    Py_XDECREF(args);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Run fn(loop) as a `finally:` block: an exception pending on entry is
 * the handled one meanwhile (sys.exception(), and the __context__ of what
 * fn raises), then current again, unless fn raised. */
static int
loop_finally(LoopObj *loop, int (*fn)(LoopObj *))
{
    if (!PyErr_Occurred()) {
        return fn(loop);
    }
    PyObject *pending = aloop_fetch_exception();
    PyObject *handled = PyErr_GetHandledException();
    PyErr_SetHandledException(pending);
    int rc = fn(loop);
    PyErr_SetHandledException(handled);
    Py_XDECREF(handled);
    if (rc == 0) {
        aloop_restore_exception(pending);
        return -1;
    }
    PyObject *mine = aloop_fetch_exception();
    PyObject *context = PyException_GetContext(mine);
    if (context == NULL && mine != pending) {
        PyException_SetContext(mine, pending); /* steals */
    } else {
        Py_XDECREF(context);
        Py_DECREF(pending);
    }
    aloop_restore_exception(mine);
    return -1;
}

/* loop_run_forever_undo as a `finally:` block. */
static void
loop_run_forever_cleanup(LoopObj *loop)
{
    (void)loop_finally(loop, loop_run_forever_undo);
}

/* -------------------------------------------------------- Python methods */

/* self.<hook>() where a subclass overrides it (loopclass.c), else `fn`:
 * 0 or -1. */
static int
loop_run_hook(LoopObj *loop, int hook, int (*fn)(LoopObj *))
{
    int overridden = aloop_loop_overrides(loop, ALOOP_HOOK(hook));
    if (overridden <= 0) {
        return overridden < 0 ? -1 : fn(loop);
    }
    PyObject *r = PyObject_CallMethodNoArgs(
        (PyObject *)loop, PyTuple_GET_ITEM(loop->state->hook_names, hook));
    Py_XDECREF(r);
    return r ? 0 : -1;
}

#if PY_VERSION_HEX >= 0x030D0000
static int
loop_cleanup_through_self(LoopObj *loop)
{
    return loop_run_hook(loop, ALOOP_HOOK_RUN_FOREVER_CLEANUP,
                         loop_run_forever_undo);
}
#endif

static PyObject *
LoopObj_run_forever(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    /* As the stdlib's: setup, self._run_once() until stopping, cleanup
     * (3.13: through self, for subclasses); the C calls when nothing is
     * overridden. */
#if PY_VERSION_HEX >= 0x030D0000
    if (loop_run_hook(self, ALOOP_HOOK_RUN_FOREVER_SETUP,
                      loop_run_forever_setup) < 0) {
        return NULL;
    }
#else
    if (loop_run_forever_setup(self) < 0) {
        return NULL;
    }
#endif
    Py_INCREF(self); /* a callback may drop the last other reference */
    int rc = 0;
    for (;;) {
        rc = loop_run_hook(self, ALOOP_HOOK_RUN_ONCE, loop_run_once);
        if (rc < 0 || self->stopping) {
            break;
        }
    }
#if PY_VERSION_HEX >= 0x030D0000
    (void)loop_finally(self, loop_cleanup_through_self);
#else
    loop_run_forever_cleanup(self);
#endif
    Py_DECREF(self);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

#if PY_VERSION_HEX >= 0x030D0000
static PyObject *
LoopObj__run_forever_setup(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return loop_run_forever_setup(self) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
LoopObj__run_forever_cleanup(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return loop_run_forever_undo(self) < 0 ? NULL : Py_NewRef(Py_None);
}
#endif

static PyObject *
LoopObj__run_once(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (loop_run_once(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj_stop(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = true;
    Py_RETURN_NONE;
}

static PyObject *
LoopObj_is_running(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->running);
}

static PyObject *
LoopObj_is_closed(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
LoopObj_time(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(aloop_loop_time());
}

/* loop.time = ... (mock.patch.object(loop, "time") does it): the
 * scheduler must then call it, as the stdlib's does (loopclass.c). */
static int
LoopObj_setattro(LoopObj *self, PyObject *name, PyObject *value)
{
    int rc = PyObject_GenericSetAttr((PyObject *)self, name, value);
    if (rc == 0) {
        aloop_loop_note_setattr(self, name, value != NULL);
    }
    return rc;
}

static PyObject *
LoopObj_get_debug(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

/* A call of call_soon & co, `([first,] callback, *args, context=None)`;
 * every field borrowed from the call's vector. */
typedef struct {
    PyObject *first; /* call_later's delay, call_at's when; else NULL */
    PyObject *callback;
    PyObject *const *args;
    Py_ssize_t nargs;
    PyObject *context; /* or NULL */
} loop_callargs;

/* Bind a call of `meth` to `([first,] callback, *args, context=None)`;
 * `first` names the leading parameter of call_later/call_at, or is NULL.
 * The usual calls (positional, maybe context=) take the short way. */
static int
loop_parse_callback(const char *meth, const char *first, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames, loop_callargs *c)
{
    Py_ssize_t need = first ? 2 : 1;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs >= need &&
        (nkw == 0 ||
         (nkw == 1 && PyUnicode_CompareWithASCIIString(
                          PyTuple_GET_ITEM(kwnames, 0), "context") == 0))) {
        c->first = first ? args[0] : NULL;
        c->callback = args[need - 1];
        c->args = args + need;
        c->nargs = nargs - need;
        c->context = nkw ? args[nargs] : NULL;
        return 0;
    }
    aloop_signature sig = {"BaseEventLoop",
                           meth,
                           {first ? first : "callback", "callback"},
                           need,
                           need,
                           true,
                           "context"};
    aloop_bound_args a;
    if (aloop_args_bind(&sig, args, nargs, kwnames, &a) < 0) {
        return -1;
    }
    c->first = first ? a.params[0] : NULL;
    c->callback = a.params[need - 1];
    c->args = a.rest;
    c->nargs = a.nrest;
    c->context = a.kwonly;
    return 0;
}

static PyObject *
loop_pack_args(aloop_state *st, PyObject *const *args, Py_ssize_t n)
{
    if (n == 0) {
        return Py_NewRef(st->empty_tuple);
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
    }
    return t;
}

static HandleObj *
loop_new_handle(LoopObj *self, const char *meth, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, bool check_thread)
{
    loop_callargs c;
    if (loop_parse_callback(meth, NULL, args, nargs, kwnames, &c) < 0 ||
        aloop_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->debug &&
        ((check_thread && aloop_loop_check_thread(self) < 0) ||
         aloop_loop_check_callback(self, c.callback, meth) < 0)) {
        return NULL;
    }
    PyObject *cbargs = loop_pack_args(self->state, c.args, c.nargs);
    if (cbargs == NULL) {
        return NULL;
    }
    HandleObj *h = aloop_handle_new(self, c.callback, cbargs, c.context);
    Py_DECREF(cbargs);
    if (h != NULL) {
        int rc = aloop_readyq_push(&self->ready, (PyObject *)h, NULL, 0);
        if (rc < 0) {
            Py_DECREF(h);
            return (HandleObj *)aloop_errno_error(rc);
        }
    }
    return h;
}

static PyObject *
LoopObj_call_soon(LoopObj *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    return (PyObject *)loop_new_handle(self, "call_soon", args, nargs, kwnames,
                                       true);
}

static PyObject *
LoopObj_call_soon_threadsafe(LoopObj *self, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames)
{
    HandleObj *h = loop_new_handle(self, "call_soon_threadsafe", args, nargs,
                                   kwnames, false);
    if (h != NULL && self->polling && !self->wakeup_pending) {
        self->wakeup_pending = true;
        aloop_loop_wakeup(self);
    }
    return (PyObject *)h;
}

/* call_at/call_later once `when` is known. */
static PyObject *
loop_schedule_timer(LoopObj *self, double when, const char *meth,
                    const loop_callargs *c)
{
    if (aloop_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->debug &&
        (aloop_loop_check_thread(self) < 0 ||
         aloop_loop_check_callback(self, c->callback, meth) < 0)) {
        return NULL;
    }
    PyObject *cbargs = loop_pack_args(self->state, c->args, c->nargs);
    if (cbargs == NULL) {
        return NULL;
    }
    HandleObj *t =
        aloop_timerhandle_new(self, when, c->callback, cbargs, c->context);
    Py_DECREF(cbargs);
    if (t == NULL) {
        return NULL;
    }
    int rc = aloop_timerheap_push(&self->timers, t);
    if (rc < 0) {
        Py_DECREF(t);
        return aloop_errno_error(rc);
    }
    t->scheduled = true;
    return (PyObject *)t;
}

/* self.call_at(when, callback, *args, context=context), as the stdlib's
 * call_later makes it, for a subclass that overrides call_at. */
static PyObject *
loop_call_at_through_self(LoopObj *self, double when, const loop_callargs *c)
{
    Py_ssize_t n = 3 + c->nargs; /* self, when, callback, *args */
    PyObject **vec = PyMem_Malloc((size_t)(n + 1) * sizeof(PyObject *));
    PyObject *whenobj = PyFloat_FromDouble(when);
    PyObject *kw = Py_BuildValue("(s)", "context");
    PyObject *meth = PyUnicode_InternFromString("call_at");
    PyObject *r = NULL;
    if (vec == NULL || whenobj == NULL || kw == NULL || meth == NULL) {
        if (vec == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    vec[0] = (PyObject *)self;
    vec[1] = whenobj;
    vec[2] = c->callback;
    for (Py_ssize_t i = 0; i < c->nargs; i++) {
        vec[3 + i] = c->args[i];
    }
    vec[n] = c->context ? c->context : Py_None;
    r = PyObject_VectorcallMethod(meth, vec, (size_t)n, kw);
done:
    PyMem_Free(vec);
    Py_XDECREF(whenobj);
    Py_XDECREF(kw);
    Py_XDECREF(meth);
    return r;
}

static PyObject *
LoopObj_call_later(LoopObj *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    loop_callargs c;
    if (loop_parse_callback("call_later", "delay", args, nargs, kwnames, &c) <
        0) {
        return NULL;
    }
    PyObject *delay = c.first;
    double when, t;
    if (delay == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return NULL;
    }
    if (loop_now(self, &t) < 0) {
        return NULL;
    }
    if (PyFloat_CheckExact(delay)) {
        when = t + PyFloat_AS_DOUBLE(delay);
    } else if (PyLong_CheckExact(delay)) {
        double d = PyLong_AsDouble(delay); /* OverflowError as float + int */
        if (d == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        when = t + d;
    } else {
        /* float + delay, so odd types fail with the stdlib's message */
        PyObject *now = PyFloat_FromDouble(t);
        PyObject *sum = now ? PyNumber_Add(now, delay) : NULL;
        Py_XDECREF(now);
        if (sum == NULL) {
            return NULL;
        }
        when = PyFloat_AsDouble(sum);
        Py_DECREF(sum);
        if (when == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
    }
    int overridden =
        aloop_loop_overrides(self, ALOOP_HOOK(ALOOP_HOOK_CALL_AT));
    if (overridden) {
        return overridden < 0 ? NULL
                              : loop_call_at_through_self(self, when, &c);
    }
    return loop_schedule_timer(self, when, "call_at", &c);
}

static PyObject *
LoopObj_call_at(LoopObj *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    loop_callargs c;
    if (loop_parse_callback("call_at", "when", args, nargs, kwnames, &c) < 0) {
        return NULL;
    }
    if (c.first == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return NULL;
    }
    double when = PyFloat_AsDouble(c.first);
    if (when == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    HandleObj *t = (HandleObj *)loop_schedule_timer(self, when, "call_at", &c);
    if (t != NULL && !PyFloat_CheckExact(c.first)) {
        t->when_slot = Py_NewRef(c.first); /* when() returns it as given */
    }
    return (PyObject *)t;
}

static PyObject *
LoopObj_create_future(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *args[1] = {(PyObject *)self};
    return PyObject_Vectorcall(self->state->Future, args, 0,
                               self->state->kwnames_loop);
}

/* create_task(coro, *, name=None, context=None).  Without a task factory
 * and outside debug mode this is Task(coro, loop=self, name=..., context=...)
 * as in BaseEventLoop.create_task; otherwise the stdlib's method runs, so
 * factories and source-traceback trimming behave exactly as there. */
static PyObject *
LoopObj_create_task(LoopObj *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    aloop_state *st = self->state;
    PyObject *name = Py_None, *context = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    bool fast = nargs == 1 && !self->debug;
    for (Py_ssize_t i = 0; fast && i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, "name") == 0) {
            name = args[nargs + i];
        } else if (PyUnicode_CompareWithASCIIString(key, "context") == 0) {
            context = args[nargs + i];
        } else {
            fast = false;
        }
    }
    if (fast) {
        if (aloop_loop_check_closed(self) < 0) {
            return NULL;
        }
        PyObject *factory =
            PyObject_GetAttr((PyObject *)self, st->str_task_factory);
        if (factory == NULL) {
            return NULL;
        }
        fast = factory == Py_None;
        Py_DECREF(factory);
    }
    if (fast) {
        PyObject *targs[4] = {args[0], (PyObject *)self, name, context};
        return PyObject_Vectorcall(st->Task, targs, 1, st->kwnames_task);
    }
    /* BaseEventLoop.create_task(self, *args, **kwargs) */
    PyObject *full[16];
    if (nargs + nkw + 1 > (Py_ssize_t)(sizeof(full) / sizeof(full[0]))) {
        PyErr_SetString(PyExc_TypeError, "create_task(): too many arguments");
        return NULL;
    }
    full[0] = (PyObject *)self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        full[i + 1] = args[i];
    }
    return PyObject_Vectorcall(st->base_create_task, full, nargs + 1, kwnames);
}

static PyObject *
LoopObj__write_to_self(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (self->wakeup_fd >= 0) {
        aloop_loop_wakeup(self);
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__add_callback(LoopObj *self, PyObject *handle)
{
    if (aloop_loop_push_handle(self, handle) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__add_callback_signalsafe(LoopObj *self, PyObject *handle)
{
    if (aloop_loop_push_handle(self, handle) < 0) {
        return NULL;
    }
    return LoopObj__write_to_self(self, NULL);
}

static PyObject *
LoopObj__timer_handle_cancelled(LoopObj *self, PyObject *handle)
{
    PyObject *s = PyObject_GetAttrString(handle, "_scheduled");
    int truth = s ? PyObject_IsTrue(s) : -1;
    Py_XDECREF(s);
    if (truth < 0) {
        return NULL;
    }
    self->timer_cancelled_count += truth;
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__check_closed(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (aloop_loop_check_closed(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__check_running(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (loop_check_running(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__check_thread(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (aloop_loop_check_thread(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj__check_callback(LoopObj *self, PyObject *args)
{
    PyObject *cb;
    const char *meth;
    if (!PyArg_ParseTuple(args, "Os:_check_callback", &cb, &meth) ||
        aloop_loop_check_callback(self, cb, meth) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
loop_set_attr_str(LoopObj *self, const char *name, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    int rc = PyObject_SetAttrString((PyObject *)self, name, value);
    Py_DECREF(value);
    return rc;
}

static PyObject *
LoopObj_set_debug(LoopObj *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const aloop_signature sig = {
        "BaseEventLoop", "set_debug", {"enabled"}, 1, 1, false, NULL};
    aloop_bound_args a;
    if (aloop_args_bind(&sig, args, PyVectorcall_NARGS(nargs), kwnames, &a) <
        0) {
        return NULL;
    }
    int truth = PyObject_IsTrue(a.params[0]);
    if (truth < 0) {
        return NULL;
    }
    self->debug = truth;
    if (self->running) {
        /* call_soon_threadsafe(self._set_coroutine_origin_tracking, x) */
        PyObject *meth = PyObject_GetAttr(
            (PyObject *)self, self->state->str_set_coroutine_origin_tracking);
        if (meth == NULL) {
            return NULL;
        }
        PyObject *cbargs[2] = {meth, truth ? Py_True : Py_False};
        PyObject *h = LoopObj_call_soon_threadsafe(self, cbargs, 2, NULL);
        Py_DECREF(meth);
        if (h == NULL) {
            return NULL;
        }
        Py_DECREF(h);
    }
    Py_RETURN_NONE;
}

static PyObject *
LoopObj_close(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    aloop_state *st = self->state;
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot close a running event loop");
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_NONE;
    }
    if (self->debug && aloop_log(st->base_events, "debug", "Close %r",
                                 (PyObject *)self) < 0) {
        return NULL;
    }
    self->closed = true;
    aloop_readyq_clear(&self->ready);
    aloop_timerheap_clear(&self->timers);
    self->timer_cancelled_count = 0;
    if (loop_set_attr_str(self, "_executor_shutdown_called",
                          Py_NewRef(Py_True)) < 0) {
        return NULL;
    }
    PyObject *executor =
        PyObject_GetAttrString((PyObject *)self, "_default_executor");
    if (executor == NULL) {
        PyErr_Clear();
    } else if (executor != Py_None) {
        if (loop_set_attr_str(self, "_default_executor", Py_NewRef(Py_None)) <
            0) {
            Py_DECREF(executor);
            return NULL;
        }
        PyObject *kw = Py_BuildValue("{sO}", "wait", Py_False);
        PyObject *meth = PyObject_GetAttrString(executor, "shutdown");
        PyObject *r =
            (kw && meth) ? PyObject_Call(meth, st->empty_tuple, kw) : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(meth);
        Py_DECREF(executor);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    } else {
        Py_DECREF(executor);
    }
    aloop_fdtable_clear(&self->fds);
    Py_CLEAR(self->io_fileobjs);
    Py_CLEAR(self->spare);
    aloop_poller_close(&self->poller);
    if (self->wakeup_fd >= 0) {
        close(self->wakeup_fd);
        self->wakeup_fd = -1;
        if (loop_set_attr_str(self, "_internal_fds", PyLong_FromLong(0)) < 0) {
            return NULL;
        }
    }
    aloop_signals_close(self);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -------------------------------------------------------- type machinery */

static PyObject *
LoopObj_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    LoopObj *self = (LoopObj *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = aloop_module_state_of_type(type);
    aloop_live_loops++;
    self->poller.epfd = -1;
    self->wakeup_fd = -1;
    self->sig_rfd = self->sig_wfd = -1;
    self->slow_callback_duration = 0.1;
    self->signal_handlers = PyDict_New();
    if (self->state == NULL || self->signal_handlers == NULL) {
        goto error;
    }
    struct timespec res;
    clock_getres(CLOCK_MONOTONIC, &res);
    self->clock_resolution = res.tv_sec + res.tv_nsec * 1e-9;

    int rc = aloop_poller_open(&self->poller);
    if (rc < 0) {
        aloop_errno_error(rc);
        goto error;
    }
    self->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->wakeup_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    rc = aloop_poller_add(&self->poller, self->wakeup_fd, ALOOP_READ);
    if (rc < 0) {
        aloop_errno_error(rc);
        goto error;
    }
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

/* The attributes BaseEventLoop.__init__ and SelectorEventLoop.__init__ set
 * that the inherited Python code reads and writes. */
static int
LoopObj_init(LoopObj *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"selector", NULL};
    PyObject *selector = Py_None; /* accepted and ignored: we own epoll */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Loop", kwlist,
                                     &selector)) {
        return -1;
    }
    aloop_state *st = self->state;
    PyObject *coroutines = PyImport_ImportModule("asyncio.coroutines");
    PyObject *dbg =
        coroutines ? PyObject_CallMethod(coroutines, "_is_debug_mode", NULL)
                   : NULL;
    Py_XDECREF(coroutines);
    int debug = dbg ? PyObject_IsTrue(dbg) : -1;
    Py_XDECREF(dbg);
    if (debug < 0) {
        return -1;
    }
    self->debug = debug;
    if (loop_set_attr_str(self, "_default_executor", Py_NewRef(Py_None)) < 0 ||
        /* the stdlib's self-pipe is our wakeup eventfd: one internal fd,
         * and no _ssock/_csock socketpair */
        loop_set_attr_str(self, "_internal_fds", PyLong_FromLong(1)) < 0 ||
        loop_set_attr_str(self, "_ssock", Py_NewRef(Py_None)) < 0 ||
        loop_set_attr_str(self, "_csock", Py_NewRef(Py_None)) < 0 ||
        loop_set_attr_str(self, "_exception_handler", Py_NewRef(Py_None)) <
            0 ||
        loop_set_attr_str(self, "_task_factory", Py_NewRef(Py_None)) < 0 ||
        loop_set_attr_str(self, "_coroutine_origin_tracking_enabled",
                          Py_NewRef(Py_False)) < 0 ||
        loop_set_attr_str(self, "_coroutine_origin_tracking_saved_depth",
                          Py_NewRef(Py_None)) < 0 ||
        loop_set_attr_str(self, "_asyncgens",
                          PyObject_CallNoArgs(st->weakset)) < 0 ||
        loop_set_attr_str(self, "_asyncgens_shutdown_called",
                          Py_NewRef(Py_False)) < 0 ||
        loop_set_attr_str(self, "_executor_shutdown_called",
                          Py_NewRef(Py_False)) < 0 ||
        loop_set_attr_str(self, "_transports", aloop_transportmap_new(st)) <
            0 ||
        loop_set_attr_str(self, "_unix_server_sockets", PyDict_New()) < 0) {
        return -1;
    }
    return 0;
}

static int
LoopObj_traverse(LoopObj *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->signal_handlers);
    Py_VISIT(self->io_fileobjs);
    Py_VISIT(self->current_handle);
    Py_VISIT(self->old_agen_hooks);
    aloop_readyq_traverse(&self->ready, visit, arg);
    aloop_timerheap_traverse(&self->timers, visit, arg);
    aloop_fdtable_traverse(&self->fds, visit, arg);
    return 0;
}

static int
LoopObj_clear(LoopObj *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->signal_handlers);
    Py_CLEAR(self->io_fileobjs);
    Py_CLEAR(self->spare);
    Py_CLEAR(self->current_handle);
    Py_CLEAR(self->old_agen_hooks);
    aloop_sockaddr_memo_clear(&self->sockname_memo);
    aloop_readyq_clear(&self->ready);
    aloop_timerheap_clear(&self->timers);
    aloop_fdtable_clear(&self->fds);
    return 0;
}

static void
LoopObj_dealloc(LoopObj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    /* BaseEventLoop.__del__ (inherited) warns about an unclosed loop. */
    if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    (void)LoopObj_clear(self);
    aloop_readyq_free(&self->ready);
    aloop_poller_close(&self->poller);
    if (self->wakeup_fd >= 0) {
        close(self->wakeup_fd);
    }
    if (self->sig_rfd >= 0) {
        close(self->sig_rfd);
        close(self->sig_wfd);
    }
    PyMem_RawFree(self->events);
    PyMem_RawFree(self->read_buf);
    aloop_live_loops--; /* no state here: it may be gone at exit */
    tp->tp_free(self);
    Py_DECREF(tp);
}

#define BOOL_GETSET(field)                                                  \
    static PyObject *LoopObj_getattr_##field(LoopObj *self, void *c)        \
    {                                                                       \
        return PyBool_FromLong(self->field);                                \
    }                                                                       \
    static int LoopObj_setattr_##field(LoopObj *self, PyObject *v, void *c) \
    {                                                                       \
        int t = v ? PyObject_IsTrue(v) : 0;                                 \
        if (t < 0) {                                                        \
            return -1;                                                      \
        }                                                                   \
        self->field = t;                                                    \
        return 0;                                                           \
    }
BOOL_GETSET(closed)
BOOL_GETSET(stopping)
BOOL_GETSET(debug)

static PyObject *
LoopObj_get_thread_id(LoopObj *self, void *c)
{
    if (!self->running) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(self->thread_id);
}

/* The stdlib's is_running() is `_thread_id is not None`: code that sets
 * it (a subclass reimplementing _run_forever_setup) starts or ends that. */
static int
LoopObj_set_thread_id(LoopObj *self, PyObject *v, void *c)
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_thread_id");
        return -1;
    }
    if (v == Py_None) {
        self->running = false;
        self->thread_id = 0;
        return 0;
    }
    unsigned long id = PyLong_AsUnsignedLong(v);
    if (id == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    self->thread_id = id;
    self->running = true;
    return 0;
}

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13's _run_forever_setup/_cleanup keep the hooks in _old_agen_hooks. */
static PyObject *
LoopObj_get_old_agen_hooks(LoopObj *self, void *c)
{
    return Py_NewRef(self->old_agen_hooks ? self->old_agen_hooks : Py_None);
}

static int
LoopObj_set_old_agen_hooks(LoopObj *self, PyObject *v, void *c)
{
    Py_XSETREF(self->old_agen_hooks, v == Py_None ? NULL : Py_XNewRef(v));
    return 0;
}
#endif

static PyObject *
LoopObj_get_slow_callback_duration(LoopObj *self, void *c)
{
    return PyFloat_FromDouble(self->slow_callback_duration);
}

/* A number (a T_DOUBLE member would store -1.0 before refusing a str). */
static int
LoopObj_set_slow_callback_duration(LoopObj *self, PyObject *v, void *c)
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "slow_callback_duration");
        return -1;
    }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->slow_callback_duration = d;
    return 0;
}

static PyObject *
LoopObj_get_current_handle(LoopObj *self, void *c)
{
    return Py_NewRef(self->current_handle ? self->current_handle : Py_None);
}

static PyObject *
LoopObj_get_signal_handlers(LoopObj *self, void *c)
{
    return Py_NewRef(self->signal_handlers);
}

static PyObject *
LoopObj_get_timer_cancelled_count(LoopObj *self, void *c)
{
    return PyLong_FromSsize_t(self->timer_cancelled_count);
}

static PyObject *
LoopObj_get_selector(LoopObj *self, void *c)
{
    return aloop_loop_selector_view(self);
}

static PyGetSetDef LoopObj_getset[] = {
    {"_selector", (getter)LoopObj_get_selector, NULL, NULL, NULL},
    {"_closed", (getter)LoopObj_getattr_closed, (setter)LoopObj_setattr_closed,
     NULL, NULL},
    {"_stopping", (getter)LoopObj_getattr_stopping,
     (setter)LoopObj_setattr_stopping, NULL, NULL},
    {"_debug", (getter)LoopObj_getattr_debug, (setter)LoopObj_setattr_debug,
     NULL, NULL},
    {"_thread_id", (getter)LoopObj_get_thread_id,
     (setter)LoopObj_set_thread_id, NULL, NULL},
#if PY_VERSION_HEX >= 0x030D0000
    {"_old_agen_hooks", (getter)LoopObj_get_old_agen_hooks,
     (setter)LoopObj_set_old_agen_hooks, NULL, NULL},
#endif
    {"_current_handle", (getter)LoopObj_get_current_handle, NULL, NULL, NULL},
    {"slow_callback_duration", (getter)LoopObj_get_slow_callback_duration,
     (setter)LoopObj_set_slow_callback_duration, NULL, NULL},
    {"_signal_handlers", (getter)LoopObj_get_signal_handlers, NULL, NULL,
     NULL},
    {"_timer_cancelled_count", (getter)LoopObj_get_timer_cancelled_count, NULL,
     NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef LoopObj_members[] = {
    {"_clock_resolution", T_DOUBLE, offsetof(LoopObj, clock_resolution),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(LoopObj, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(LoopObj, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define FASTCALL_KW (METH_FASTCALL | METH_KEYWORDS)
static PyMethodDef LoopObj_methods[] = {
    {"run_forever", (PyCFunction)LoopObj_run_forever, METH_NOARGS, NULL},
    {"_run_once", (PyCFunction)LoopObj__run_once, METH_NOARGS, NULL},
#if PY_VERSION_HEX >= 0x030D0000
    {"_run_forever_setup", (PyCFunction)LoopObj__run_forever_setup,
     METH_NOARGS, NULL},
    {"_run_forever_cleanup", (PyCFunction)LoopObj__run_forever_cleanup,
     METH_NOARGS, NULL},
#endif
    {"stop", (PyCFunction)LoopObj_stop, METH_NOARGS, NULL},
    {"close", (PyCFunction)LoopObj_close, METH_NOARGS, NULL},
    {"is_running", (PyCFunction)LoopObj_is_running, METH_NOARGS, NULL},
    {"is_closed", (PyCFunction)LoopObj_is_closed, METH_NOARGS, NULL},
    {"time", (PyCFunction)LoopObj_time, METH_NOARGS, NULL},
    {"get_debug", (PyCFunction)LoopObj_get_debug, METH_NOARGS, NULL},
    {"set_debug", (PyCFunction)(void (*)(void))LoopObj_set_debug, FASTCALL_KW,
     NULL},
    {"call_soon", (PyCFunction)(void (*)(void))LoopObj_call_soon, FASTCALL_KW,
     NULL},
    {"call_soon_threadsafe",
     (PyCFunction)(void (*)(void))LoopObj_call_soon_threadsafe, FASTCALL_KW,
     NULL},
    {"call_later", (PyCFunction)(void (*)(void))LoopObj_call_later,
     FASTCALL_KW, NULL},
    {"call_at", (PyCFunction)(void (*)(void))LoopObj_call_at, FASTCALL_KW,
     NULL},
    {"create_future", (PyCFunction)LoopObj_create_future, METH_NOARGS, NULL},
    {"create_task", (PyCFunction)(void (*)(void))LoopObj_create_task,
     FASTCALL_KW, NULL},
    {"_write_to_self", (PyCFunction)LoopObj__write_to_self, METH_NOARGS, NULL},
    {"_add_callback", (PyCFunction)LoopObj__add_callback, METH_O, NULL},
    {"_add_callback_signalsafe", (PyCFunction)LoopObj__add_callback_signalsafe,
     METH_O, NULL},
    {"_timer_handle_cancelled", (PyCFunction)LoopObj__timer_handle_cancelled,
     METH_O, NULL},
    {"_check_closed", (PyCFunction)LoopObj__check_closed, METH_NOARGS, NULL},
    {"_check_running", (PyCFunction)LoopObj__check_running, METH_NOARGS, NULL},
    {"_check_thread", (PyCFunction)LoopObj__check_thread, METH_NOARGS, NULL},
    {"_check_callback", (PyCFunction)LoopObj__check_callback, METH_VARARGS,
     NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot loop_slots[] = {
    {Py_tp_new, LoopObj_new},           {Py_tp_init, LoopObj_init},
    {Py_tp_dealloc, LoopObj_dealloc},   {Py_tp_traverse, LoopObj_traverse},
    {Py_tp_clear, LoopObj_clear},       {Py_tp_methods, LoopObj_methods},
    {Py_tp_getset, LoopObj_getset},     {Py_tp_members, LoopObj_members},
    {Py_tp_setattro, LoopObj_setattro}, {0, NULL},
};

static PyType_Spec loop_spec = {
    .name = "aloop._core.Loop",
    .basicsize = sizeof(LoopObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = loop_slots,
};

int
aloop_loop_setup_types(PyObject *module, aloop_state *st)
{
    /* The method tables of loop_io.c and signals.c join ours. */
    static PyMethodDef all[64];
    size_t n = 0;
    PyMethodDef *tables[] = {LoopObj_methods,
                             aloop_loop_io_methods,
                             aloop_signal_methods,
                             aloop_sockops_methods,
                             aloop_stream_loop_methods,
                             aloop_server_methods,
                             aloop_datagram_loop_methods};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        for (PyMethodDef *m = tables[t]; m->ml_name != NULL; m++) {
            if (n + 1 >= sizeof(all) / sizeof(all[0])) {
                PyErr_SetString(PyExc_SystemError, "aloop: too many methods");
                return -1;
            }
            all[n++] = *m;
        }
    }
    all[n] = (PyMethodDef){NULL, NULL, 0, NULL};
    loop_slots[5].pfunc = all;

    st->LoopType =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &loop_spec, NULL);
    if (st->LoopType == NULL) {
        return -1;
    }
    if (aloop_loopclass_setup(st) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Loop", (PyObject *)st->LoopType);
}
