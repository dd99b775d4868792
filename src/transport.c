/* transport.c -- what selector_events._SelectorTransport does, shared by
 * the C stream (stream.c) and datagram (datagram.c) transports.
 *
 * Every transport struct starts with ALOOP_TRANSPORT_HEAD: BaseTransport's
 * one slot (_extra, read by the inherited get_extra_info()) first, then
 * the state _SelectorTransport and _FlowControlMixin keep.  The type's own
 * behaviour (reading, writing, its buffer, the protocol methods it caches)
 * comes through `ops`.  Messages, checks and callback order are the
 * stdlib's:
 *   - connection_made, the start of reading and the creator's waiter are
 *     queued in that order (internal ready-queue events, no Handles);
 *   - close() waits for the buffer to drain; abort() and fatal errors drop
 *     it; connection_lost runs exactly once, via the ready queue, and the
 *     socket is closed after it;
 *   - OSErrors are fatal silently (logged in debug mode); other errors go
 *     to the exception handler with the transport and protocol;
 *   - protocol callbacks run in the contextvars Context the stdlib's
 *     Handles would give them: reading (data_received, eof_received ...)
 *     in a copy of the creator's context, renewed by resume_reading();
 *     writability (resume_writing ...) in a copy of the context that
 *     started waiting for it; connection_made and connection_lost in
 *     copies of the context current when they were queued.  Calls made
 *     during a user's call (pause_writing() from write()) run in the
 *     caller's context.  So ContextVar changes stay where they would;
 *   - a queued readiness event whose watcher was removed since (pause,
 *     close) does not run, as a cancelled Handle would not; an error out
 *     of one, or out of a queued protocol call, is reported as Handle._run
 *     reports it (message naming the call, and a Handle in the context);
 *   - from 3.12, a socket a live transport has is refused, as the
 *     stdlib's _make_*_transport do (_ensure_fd_no_transport).
 * Invariant: the fd table holds one reference to the transport for each
 * watcher (reader, writer) it has registered.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

#define LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

enum {
    EV_CONNECTION_MADE = 1,
    EV_START_READING,
    EV_WAKE_WAITER,
    EV_CONNECTION_LOST,
};

static aloop_state *
transport_state(TransportObj *t)
{
    return (aloop_state *)PyType_GetModuleState(Py_TYPE(t));
}

/* Run fn(loop, owner, ev) inside ctx (a Context no one else enters). */
static int
transport_in_context(PyObject *ctx, aloop_event_fn fn, LoopObj *loop,
                     PyObject *owner, uint32_t ev)
{
    if (ctx == NULL) {
        return fn(loop, owner, ev);
    }
    Py_INCREF(ctx); /* the callback may replace the transport's */
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return aloop_loop_report_exception(loop, "Exception in callback");
    }
    int rc = fn(loop, owner, ev);
    if (PyContext_Exit(ctx) < 0) {
        rc = -1;
    }
    Py_DECREF(ctx);
    return rc;
}

/* A queued call, described as the stdlib's Handle for it: callback
 * owner.name (owner itself without a name) and the non-NULL ones of
 * arg1, arg2 as arguments. */
typedef struct {
    PyObject *owner;
    const char *name;
    PyObject *arg1, *arg2;
} transport_call;

/* That Handle, made now (only to report an error or a slow call); NULL
 * without an exception if there is no owner. */
static HandleObj *
transport_call_handle(LoopObj *loop, const transport_call *c)
{
    if (c->owner == NULL) {
        return NULL;
    }
    PyObject *cb = c->name ? PyObject_GetAttrString(c->owner, c->name)
                           : Py_NewRef(c->owner);
    PyObject *args = cb == NULL ? NULL
                     : c->arg2  ? PyTuple_Pack(2, c->arg1, c->arg2)
                     : c->arg1  ? PyTuple_Pack(1, c->arg1)
                                : PyTuple_New(0);
    HandleObj *h = args ? aloop_handle_new(loop, cb, args, NULL) : NULL;
    Py_XDECREF(cb);
    Py_XDECREF(args);
    if (h != NULL) { /* not where it was queued: none rather than wrong */
        Py_SETREF(h->source_traceback, Py_NewRef(Py_None));
    }
    return h;
}

/* The call failed: report it as Handle._run would (plainly if the Handle
 * cannot be made).  0, or -1 if fatal. */
static int
transport_call_failed(LoopObj *loop, const transport_call *c)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    HandleObj *h = transport_call_handle(loop, c);
    PyErr_Clear(); /* of making h: the call's error is the one to report */
    aloop_restore_exception(exc);
    int rc = h ? aloop_handle_report_current(h)
               : aloop_loop_report_exception(loop, "Exception in callback");
    Py_XDECREF(h);
    return rc;
}

/* Run fn as the stdlib runs the Handle `c` describes: errors reported,
 * and in debug mode timed against slow_callback_duration. */
static int
transport_run_call(LoopObj *loop, TransportObj *t, const transport_call *c,
                   PyObject *ctx, aloop_event_fn fn, uint32_t ev)
{
    double t0 = 0.0, t1;
    if (loop->debug && aloop_loop_now(loop, &t0) < 0) {
        return -1;
    }
    if (transport_in_context(ctx, fn, loop, (PyObject *)t, ev) < 0 &&
        transport_call_failed(loop, c) < 0) {
        return -1;
    }
    if (!loop->debug || c->owner == NULL) {
        return 0;
    }
    if (aloop_loop_now(loop, &t1) < 0) {
        return -1;
    }
    if (t1 - t0 < loop->slow_callback_duration) {
        return 0;
    }
    HandleObj *h = transport_call_handle(loop, c);
    int rc = h ? aloop_loop_warn_slow(loop, (PyObject *)h, t1 - t0) : -1;
    Py_XDECREF(h);
    return rc;
}

/* Whether the fd's `which` watcher is this transport. */
static bool
transport_watching(TransportObj *t, uint32_t which)
{
    return t->loop != NULL &&
           aloop_loop_watches(t->loop, t->fd, which, (PyObject *)t);
}

/* A readiness event, queued by the poller.  If the watcher was removed
 * since (pause_reading, close, the fd closed and reused), it does not run,
 * as the stdlib's cancelled reader or writer Handle does not.  An error
 * is reported as Handle._run reports one from _read_ready/_write_ready. */
static int
transport_io_event(LoopObj *loop, TransportObj *t, uint32_t which,
                   PyObject *ctx, aloop_event_fn fn, uint32_t ev)
{
    if (!transport_watching(t, which)) {
        return 0;
    }
    transport_call c = {
        (PyObject *)t,
        which == ALOOP_READ ? "_read_ready" : t->ops->write_ready_name, NULL,
        NULL};
    return transport_run_call(loop, t, &c, ctx, fn, ev);
}

static int
transport_read_event(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    TransportObj *t = (TransportObj *)owner;
    return transport_io_event(loop, t, ALOOP_READ, t->read_ctx,
                              t->ops->read_ready, ev);
}

static int
transport_write_event(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    TransportObj *t = (TransportObj *)owner;
    return transport_io_event(loop, t, ALOOP_WRITE, t->write_ctx,
                              t->ops->write_ready, ev);
}

int
aloop_transport_watch(TransportObj *t, uint32_t which, bool on)
{
    if (t->loop == NULL || t->loop->closed) {
        return 0;
    }
    if (transport_watching(t, which) == on) {
        return 0; /* nothing to do, or someone else's watcher now */
    }
    if (on && which == ALOOP_WRITE) {
        /* _add_writer's Handle: a copy of the current context */
        PyObject *ctx = PyContext_CopyCurrent();
        if (ctx == NULL) {
            return -1;
        }
        Py_XSETREF(t->write_ctx, ctx);
    }
    PyObject *old = NULL;
    int rc = aloop_loop_set_watcher(
        t->loop, t->fd, which, on ? (PyObject *)t : NULL,
        on ? (which == ALOOP_READ ? transport_read_event
                                  : transport_write_event)
           : NULL,
        &old);
    Py_XDECREF(old);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    return 0;
}

static bool
transport_polling(TransportObj *t, uint32_t which)
{
    if (t->loop == NULL) {
        return false;
    }
    aloop_fdslot *slot = aloop_fdtable_get(&t->loop->fds, t->fd);
    return slot != NULL && (slot->mask & which);
}

int
aloop_transport_call_handler(TransportObj *t, const char *message,
                             PyObject *exc)
{
    if (t->loop == NULL) {
        return 0;
    }
    PyObject *ctx = Py_BuildValue(
        "{sssOsOsO}", "message", message, "exception", exc, "transport",
        (PyObject *)t, "protocol", t->protocol ? t->protocol : Py_None);
    if (ctx == NULL) {
        return -1;
    }
    int rc = aloop_loop_call_exception_handler(t->loop, ctx);
    Py_DECREF(ctx);
    return rc;
}

static int
transport_queue(TransportObj *t, uint32_t event);

int
aloop_transport_force_close(TransportObj *t, PyObject *exc)
{
    if (t->conn_lost || t->loop == NULL) {
        return 0;
    }
    /* what was written before the error had left with the stdlib */
    if (aloop_transport_flush_held(t) < 0) {
        return -1;
    }
    if (t->conn_lost) { /* the flush failed fatally */
        return 0;
    }
    if (t->buffer_size) {
        t->ops->clear_buffer(t);
        if (aloop_transport_watch(t, ALOOP_WRITE, false) < 0) {
            return -1;
        }
    }
    if (!t->closing) {
        t->closing = true;
        if (aloop_transport_watch(t, ALOOP_READ, false) < 0) {
            return -1;
        }
    }
    t->conn_lost++;
    Py_XSETREF(t->lost_exc, Py_XNewRef(exc));
    return transport_queue(t, EV_CONNECTION_LOST);
}

int
aloop_transport_fatal_error(TransportObj *t, PyObject *exc,
                            const char *message)
{
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_OSError)) {
        if (t->loop != NULL && t->loop->debug) {
            aloop_state *st = transport_state(t);
            PyObject *kw = Py_BuildValue("{sO}", "exc_info", Py_True);
            PyObject *logger = aloop_logger(st->selector_events);
            PyObject *meth =
                logger ? PyObject_GetAttrString(logger, "debug") : NULL;
            Py_XDECREF(logger);
            PyObject *args =
                Py_BuildValue("(sOs)", "%r: %s", (PyObject *)t, message);
            PyObject *r =
                (kw && meth && args) ? PyObject_Call(meth, args, kw) : NULL;
            Py_XDECREF(kw);
            Py_XDECREF(meth);
            Py_XDECREF(args);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
    } else if (aloop_transport_call_handler(t, message, exc) < 0) {
        return -1;
    }
    return aloop_transport_force_close(t, exc);
}

int
aloop_transport_fatal_current(TransportObj *t, const char *message)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = aloop_transport_fatal_error(t, exc, message);
    Py_DECREF(exc);
    return rc;
}

int
aloop_transport_fatal_errno(TransportObj *t, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return aloop_transport_fatal_current(t, message);
}

/* _FlowControlMixin: pause_writing()/resume_writing() at the water marks;
 * a protocol failing in them goes to the exception handler. */
static int
transport_protocol_flow(TransportObj *t, bool pause)
{
    t->protocol_paused = pause;
    PyObject *r = PyObject_CallMethod(
        t->protocol, pause ? "pause_writing" : "resume_writing", NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = aloop_transport_call_handler(
        t,
        pause ? "protocol.pause_writing() failed"
              : "protocol.resume_writing() failed",
        exc);
    Py_DECREF(exc);
    return rc;
}

int
aloop_transport_maybe_pause(TransportObj *t)
{
    if (t->buffer_size <= t->high_water || t->protocol_paused ||
        t->protocol == NULL) {
        return 0;
    }
    return transport_protocol_flow(t, true);
}

int
aloop_transport_maybe_resume(TransportObj *t)
{
    if (!t->protocol_paused || t->buffer_size > t->low_water ||
        t->protocol == NULL) {
        return 0;
    }
    return transport_protocol_flow(t, false);
}

/* A write after the connection was lost: counted, warned about after 5. */
int
aloop_transport_lost_writes(TransportObj *t)
{
    int rc = 0;
    if (t->conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
        aloop_state *st = transport_state(t);
        rc = aloop_log(st->selector_events, "warning", "%s",
                       st->str_send_raised);
    }
    t->conn_lost++;
    return rc;
}

/* Server._attach / _detach, with the signature of the running version
 * (3.13 passes the transport). */
static PyObject *
transport_server_call(PyObject *server, PyObject *name, TransportObj *t)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_CallMethodOneArg(server, name, (PyObject *)t);
#else
    return PyObject_CallMethodNoArgs(server, name);
#endif
}

PyObject *
aloop_transport_call_connection_lost(TransportObj *t, PyObject *exc)
{
    aloop_state *st = transport_state(t);
    PyObject *res;
    Py_INCREF(t);
    if (t->protocol_connected && t->protocol != NULL) {
        res = PyObject_CallMethodOneArg(t->protocol, st->str_connection_lost,
                                        exc ? exc : Py_None);
    } else {
        res = Py_NewRef(Py_None);
    }
    /* finally: */
    PyObject *pending = res ? NULL : aloop_fetch_exception();
    (void)aloop_transport_watch(t, ALOOP_READ, false);
    (void)aloop_transport_watch(t, ALOOP_WRITE, false);
    PyObject *sock = t->sock, *server = t->server;
    t->sock = NULL;
    t->server = NULL;
    Py_CLEAR(t->protocol);
    t->ops->clear_protocol(t);
    Py_CLEAR(t->loop);
    int rc = 0;
    if (sock != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(sock, st->str_close);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
        Py_DECREF(sock);
    }
    if (server != NULL) {
        PyObject *r = transport_server_call(server, st->str_detach, t);
        rc = r ? rc : -1;
        Py_XDECREF(r);
        Py_DECREF(server);
    }
    if (pending != NULL) {
        PyErr_Clear();
        aloop_restore_exception(pending);
        Py_DECREF(t);
        return NULL;
    }
    /* _SelectorSocketTransport: a pending sendfile learns of the loss. */
    if (rc == 0 && t->empty_waiter != NULL) {
        PyObject *cexc = PyObject_CallFunction(PyExc_ConnectionError, "s",
                                               "Connection is closed by peer");
        PyObject *r = cexc ? PyObject_CallMethod(t->empty_waiter,
                                                 "set_exception", "(O)", cexc)
                           : NULL;
        Py_XDECREF(cexc);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(t);
    if (rc < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    return res;
}

/* What a queued event does: 0, or -1 with the exception of the call. */
static int
transport_event(LoopObj *loop, PyObject *owner, uint32_t event)
{
    TransportObj *t = (TransportObj *)owner;
    PyObject *r;
    switch (event) {
    case EV_CONNECTION_MADE:
        if (t->protocol == NULL) {
            return 0;
        }
        r = PyObject_CallMethodOneArg(t->protocol,
                                      loop->state->str_connection_made, owner);
        break;
    case EV_START_READING:
        /* _add_reader(): only while reading (not paused, not closing) */
        if (t->closing || t->paused || t->loop == NULL) {
            return 0;
        }
        return aloop_transport_watch(t, ALOOP_READ, true);
    case EV_WAKE_WAITER: {
        PyObject *w = t->waiter;
        t->waiter = NULL;
        if (w == NULL) {
            return 0;
        }
        r = PyObject_CallFunctionObjArgs(transport_state(t)->set_result_unless,
                                         w, Py_None, NULL);
        Py_DECREF(w);
        break;
    }
    case EV_CONNECTION_LOST: {
        PyObject *exc = t->lost_exc ? t->lost_exc : Py_NewRef(Py_None);
        t->lost_exc = NULL;
        r = aloop_transport_call_connection_lost(t, exc);
        Py_DECREF(exc);
        break;
    }
    default:
        return 0;
    }
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* A queued event, run as the stdlib's call_soon() Handle for it would be:
 * connection_made and connection_lost in copies of the context they were
 * queued in (the reader's copy of it, for connection_made). */
static int
transport_queued_event(LoopObj *loop, PyObject *owner, uint32_t event)
{
    TransportObj *t = (TransportObj *)owner;
    transport_call c = {NULL, NULL, NULL, NULL}; /* no owner: plain reports */
    PyObject *ctx = NULL, *hold = NULL;
    switch (event) {
    case EV_CONNECTION_MADE:
        if (t->read_ctx != NULL &&
            (ctx = PyContext_Copy(t->read_ctx)) == NULL) {
            return aloop_loop_report_exception(loop, "Exception in callback");
        }
        hold = t->protocol ? Py_NewRef(t->protocol) : NULL;
        c = (transport_call){hold, "connection_made", owner, NULL};
        break;
    case EV_CONNECTION_LOST:
        ctx = t->lost_ctx;
        t->lost_ctx = NULL;
        hold = Py_NewRef(t->lost_exc ? t->lost_exc : Py_None);
        c = (transport_call){owner, "_call_connection_lost", hold, NULL};
        break;
    case EV_WAKE_WAITER:
        if (t->waiter != NULL) {
            hold = Py_NewRef(t->waiter);
            c = (transport_call){transport_state(t)->set_result_unless, NULL,
                                 hold, Py_None};
        }
        break;
    default:
        break;
    }
    int rc = transport_run_call(loop, t, &c, ctx, transport_event, event);
    Py_XDECREF(ctx);
    Py_XDECREF(hold);
    return rc;
}

static int
transport_queue(TransportObj *t, uint32_t event)
{
    LoopObj *loop = t->loop;
    if (loop == NULL) {
        return 0;
    }
    if (aloop_loop_check_closed(loop) < 0) {
        return -1;
    }
    if (event == EV_CONNECTION_LOST) {
        PyObject *ctx = PyContext_CopyCurrent(); /* as call_soon's */
        if (ctx == NULL) {
            return -1;
        }
        Py_XSETREF(t->lost_ctx, ctx);
    }
    int rc = aloop_readyq_push(&loop->ready, (PyObject *)t,
                               transport_queued_event, event);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    return 0;
}

/* The integer a limit acts as: size <= v iff size <= floor(v) for a
 * whole size, and a limit past PY_SSIZE_T_MAX can never be exceeded.
 * v >= 0 (validated); int() is floor there. */
static int
limit_floor(PyObject *v, Py_ssize_t *out)
{
    if (PyFloat_Check(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        *out = d >= (double)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)d;
        return 0;
    }
    PyObject *i = PyNumber_Long(v);
    if (i == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1; /* int(v) refused: not a number */
        }
        PyErr_Clear(); /* an infinite Decimal, say */
        *out = PY_SSIZE_T_MAX;
        return 0;
    }
    *out = PyLong_AsSsize_t(i);
    Py_DECREF(i);
    if (*out == -1 && PyErr_Occurred()) {
        PyErr_Clear(); /* only OverflowError: i is a nonnegative int */
        *out = PY_SSIZE_T_MAX;
    }
    return 0;
}

/* Keep the object set as a limit unless its integer says it all. */
static void
limit_keep(PyObject **slot, PyObject *v, Py_ssize_t floor)
{
    bool exact = PyLong_CheckExact(v) && floor != PY_SSIZE_T_MAX;
    Py_XSETREF(*slot, exact ? NULL : Py_NewRef(v));
}

static PyObject *
limit_get(PyObject *kept, Py_ssize_t floor)
{
    return kept ? Py_NewRef(kept) : PyLong_FromSsize_t(floor);
}

/* _set_write_buffer_limits(high=None, low=None) */
static int
transport_set_limits(TransportObj *t, PyObject *high, PyObject *low)
{
    PyObject *h = NULL, *l = NULL, *four = PyLong_FromLong(4);
    int rc = -1;
    if (four == NULL) {
        return -1;
    }
    if (high == NULL || high == Py_None) {
        h = (low == NULL || low == Py_None) ? PyLong_FromLong(64 * 1024)
                                            : PyNumber_Multiply(four, low);
    } else {
        h = Py_NewRef(high);
    }
    if (h == NULL) {
        goto done;
    }
    l = (low == NULL || low == Py_None) ? PyNumber_FloorDivide(h, four)
                                        : Py_NewRef(low);
    if (l == NULL) {
        goto done;
    }
    PyObject *zero = PyLong_FromLong(0);
    int ok1 = zero ? PyObject_RichCompareBool(h, l, Py_GE) : -1;
    int ok2 = ok1 > 0 ? PyObject_RichCompareBool(l, zero, Py_GE) : 0;
    Py_XDECREF(zero);
    if (ok1 < 0 || ok2 < 0) {
        goto done;
    }
    if (!ok1 || !ok2) {
        PyErr_Format(PyExc_ValueError,
                     "high (%R) must be >= low (%R) must be >= 0", h, l);
        goto done;
    }
    Py_ssize_t hv, lv;
    if (limit_floor(h, &hv) < 0 || limit_floor(l, &lv) < 0) {
        goto done;
    }
    t->high_water = hv;
    t->low_water = lv;
    limit_keep(&t->high_limit, h, hv);
    limit_keep(&t->low_limit, l, lv);
    rc = 0;
done:
    Py_XDECREF(h);
    Py_XDECREF(l);
    Py_DECREF(four);
    return rc;
}

static int
transport_set_protocol(TransportObj *t, PyObject *protocol)
{
    if (t->ops->set_protocol(t, protocol) < 0) {
        return -1;
    }
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    t->protocol_connected = true;
    return 0;
}

/* extra["sockname"] = sock.getsockname() (local) or extra["peername"] =
 * sock.getpeername(), None on OSError.  For a socket.socket the system
 * call is made here on t->fd, the local address through the loop's memo;
 * other socket objects (and unknown families) are asked. */
static int
transport_extra_addr(TransportObj *t, PyObject *sock, bool local)
{
    aloop_state *st = t->loop->state;
    PyObject *v = NULL;
    if (Py_IS_TYPE(sock, (PyTypeObject *)st->socket_type)) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        struct sockaddr *sa = (struct sockaddr *)&ss;
        if ((local ? getsockname(t->fd, sa, &len)
                   : getpeername(t->fd, sa, &len)) < 0) {
            v = Py_NewRef(Py_None);
        } else {
            v = local
                    ? aloop_sockaddr_memo_get(&t->loop->sockname_memo, sa, len)
                    : aloop_sockaddr_to_python(sa, len);
            if (v == NULL && PyErr_Occurred()) {
                return -1;
            }
        }
    }
    if (v == NULL) {
        v = PyObject_CallMethod(sock, local ? "getsockname" : "getpeername",
                                NULL);
    }
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError)) {
            return -1;
        }
        PyErr_Clear();
        v = Py_NewRef(Py_None);
    }
    int rc = PyDict_SetItem(t->extra,
                            local ? st->str_sockname : st->str_peername, v);
    Py_DECREF(v);
    return rc;
}

int
aloop_transport_init(TransportObj *t, const aloop_transport_ops *ops,
                     LoopObj *loop, PyObject *sock, PyObject *protocol,
                     PyObject *waiter, PyObject *extra, PyObject *server)
{
    aloop_state *st = loop->state;
    t->ops = ops;
    t->fd = -1;
    t->max_size = ALOOP_READ_BUF_SIZE;
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12's _make_socket/datagram_transport: not a live transport's fd */
    if (aloop_loop_ensure_no_transport(loop, sock) < 0) {
        return -1;
    }
#endif
    t->loop = (LoopObj *)Py_NewRef((PyObject *)loop);
    t->read_ctx = PyContext_CopyCurrent(); /* the reader Handle's */
    if (t->read_ctx == NULL) {
        return -1;
    }
    t->extra = (extra && extra != Py_None) ? Py_NewRef(extra) : PyDict_New();
    if (t->extra == NULL) {
        return -1;
    }
    /* sock.fileno() first (the stdlib asks last): the addresses of a
     * socket.socket are read from the fd */
    PyObject *fdobj = PyObject_CallMethodNoArgs(sock, st->str_fileno);
    if (fdobj == NULL) {
        return -1;
    }
    t->fd = (int)PyLong_AsLong(fdobj);
    if (t->fd == -1 && PyErr_Occurred()) {
        Py_DECREF(fdobj);
        return -1;
    }
    PyObject *tsock = PyObject_CallOneArg(st->TransportSocket, sock);
    int rc = tsock ? PyDict_SetItem(t->extra, st->str_socket, tsock) : -1;
    Py_XDECREF(tsock);
    int has_peer = rc < 0 ? -1 : PyDict_Contains(t->extra, st->str_peername);
    if (has_peer < 0 || transport_extra_addr(t, sock, true) < 0 ||
        (!has_peer && transport_extra_addr(t, sock, false) < 0) ||
        transport_set_protocol(t, protocol) < 0 ||
        transport_set_limits(t, NULL, NULL) < 0) {
        Py_DECREF(fdobj);
        return -1;
    }
    t->sock = Py_NewRef(sock);
    if (server != NULL && server != Py_None) {
        t->server = Py_NewRef(server);
        PyObject *r = transport_server_call(server, st->str_attach, t);
        if (r == NULL) {
            Py_DECREF(fdobj);
            return -1;
        }
        Py_DECREF(r);
    }
    /* loop._transports[fd] = self */
    PyObject *transports =
        PyObject_GetAttr((PyObject *)loop, st->str_transports);
    rc = transports == NULL ? -1
         : aloop_transportmap_check(st, transports)
             ? aloop_transportmap_set(transports, fdobj, (PyObject *)t)
             : PyObject_SetItem(transports, fdobj, (PyObject *)t);
    Py_XDECREF(transports);
    Py_DECREF(fdobj);
    if (rc < 0) {
        return -1;
    }
    if (waiter != NULL && waiter != Py_None) {
        t->waiter = Py_NewRef(waiter);
    }
    if (transport_queue(t, EV_CONNECTION_MADE) < 0 ||
        transport_queue(t, EV_START_READING) < 0 ||
        (t->waiter != NULL && transport_queue(t, EV_WAKE_WAITER) < 0)) {
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ Python methods */

static PyObject *
Transport_close(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing) {
        Py_RETURN_NONE;
    }
    if (aloop_transport_flush_held(t) < 0) {
        return NULL;
    }
    t->closing = true;
    if (aloop_transport_watch(t, ALOOP_READ, false) < 0) {
        return NULL;
    }
    if (t->buffer_size == 0) {
        t->conn_lost++;
        if (aloop_transport_watch(t, ALOOP_WRITE, false) < 0) {
            return NULL;
        }
        Py_XSETREF(t->lost_exc, Py_NewRef(Py_None));
        if (transport_queue(t, EV_CONNECTION_LOST) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_abort(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (aloop_transport_force_close(t, Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport__force_close(TransportObj *t, PyObject *exc)
{
    if (aloop_transport_force_close(t, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport__fatal_error(TransportObj *t, PyObject *args)
{
    PyObject *exc;
    const char *message = "Fatal error on transport";
    if (!PyArg_ParseTuple(args, "O|s:_fatal_error", &exc, &message) ||
        aloop_transport_fatal_error(t, exc, message) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport__call_connection_lost(TransportObj *t, PyObject *exc)
{
    PyObject *r = aloop_transport_call_connection_lost(t, exc);
    Py_XDECREF(r);
    return r ? Py_NewRef(Py_None) : NULL;
}

static PyObject *
Transport_is_closing(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
Transport_is_reading(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->closing && !t->paused);
}

static PyObject *
transport_reading_changed(TransportObj *t, const char *fmt)
{
    if (t->loop != NULL && t->loop->debug &&
        aloop_log(transport_state(t)->selector_events, "debug", fmt,
                  (PyObject *)t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_pause_reading(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = true;
    if (aloop_transport_watch(t, ALOOP_READ, false) < 0) {
        return NULL;
    }
    return transport_reading_changed(t, "%r pauses reading");
}

static PyObject *
Transport_resume_reading(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    /* _add_reader() makes a new Handle: a copy of the current context */
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        return NULL;
    }
    Py_XSETREF(t->read_ctx, ctx);
    t->paused = false;
    if (aloop_transport_watch(t, ALOOP_READ, true) < 0) {
        return NULL;
    }
    return transport_reading_changed(t, "%r resumes reading");
}

static PyObject *
Transport_set_protocol(TransportObj *t, PyObject *protocol)
{
    if (transport_set_protocol(t, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport_get_protocol(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
Transport_get_write_buffer_size(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (aloop_transport_flush_held(t) < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(t->buffer_size);
}

static PyObject *
Transport_get_write_buffer_limits(TransportObj *t,
                                  PyObject *Py_UNUSED(ignored))
{
    PyObject *low = limit_get(t->low_limit, t->low_water);
    PyObject *high = low ? limit_get(t->high_limit, t->high_water) : NULL;
    PyObject *r = high ? PyTuple_Pack(2, low, high) : NULL;
    Py_XDECREF(low);
    Py_XDECREF(high);
    return r;
}

static int
transport_parse_limits(TransportObj *t, PyObject *args, PyObject *kw,
                       const char *fmt)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = NULL, *low = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &high, &low)) {
        return -1;
    }
    return transport_set_limits(t, high, low);
}

static PyObject *
Transport_set_write_buffer_limits(TransportObj *t, PyObject *args,
                                  PyObject *kw)
{
    if (transport_parse_limits(t, args, kw, "|OO:set_write_buffer_limits") <
            0 ||
        aloop_transport_flush_held(t) < 0 ||
        aloop_transport_maybe_pause(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport__set_write_buffer_limits(TransportObj *t, PyObject *args,
                                   PyObject *kw)
{
    if (transport_parse_limits(t, args, kw, "|OO:_set_write_buffer_limits") <
        0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Transport__maybe_pause_protocol(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    return aloop_transport_maybe_pause(t) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
Transport__maybe_resume_protocol(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    return aloop_transport_maybe_resume(t) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
Transport__read_ready(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->loop == NULL) {
        Py_RETURN_NONE;
    }
    /* Called from Python, maybe outside run_forever: the protocol may
     * drop the loop's last reference while the read still needs it. */
    LoopObj *loop = (LoopObj *)Py_NewRef(t->loop);
    int rc = t->ops->read_ready(loop, (PyObject *)t, ALOOP_READ);
    Py_DECREF(loop);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
Transport__write_ready(TransportObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->loop == NULL) {
        Py_RETURN_NONE;
    }
    LoopObj *loop = (LoopObj *)Py_NewRef(t->loop); /* as in _read_ready */
    int rc = t->write_held
                 ? t->ops->flush_held(t)
                 : t->ops->write_ready(loop, (PyObject *)t, ALOOP_WRITE);
    Py_DECREF(loop);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

/* _SelectorTransport.__repr__ */
PyObject *
aloop_transport_repr(TransportObj *t)
{
    const char *name = Py_TYPE(t)->tp_name;
    const char *dot = strrchr(name, '.');
    name = dot ? dot + 1 : name;
    const char *state = t->sock == NULL ? " closed"
                        : t->closing    ? " closing"
                                        : "";
    if (t->loop != NULL && !t->loop->closed) {
        return PyUnicode_FromFormat(
            "<%s%s fd=%d read=%s write=<%s, bufsize=%zd>>", name, state, t->fd,
            transport_polling(t, ALOOP_READ) ? "polling" : "idle",
            transport_polling(t, ALOOP_WRITE) ? "polling" : "idle",
            t->buffer_size);
    }
    return PyUnicode_FromFormat("<%s%s fd=%d>", name, state, t->fd);
}

/* __del__: an unclosed transport warns and closes its socket. */
void
aloop_transport_finalize(TransportObj *t)
{
    if (t->sock == NULL) {
        return;
    }
    PyObject *exc = aloop_fetch_exception();
    if (PyErr_ResourceWarning((PyObject *)t, 1, "unclosed transport %R",
                              (PyObject *)t) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    PyObject *sock = t->sock;
    t->sock = NULL;
    PyObject *r = PyObject_CallMethod(sock, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_DECREF(sock);
#if PY_VERSION_HEX >= 0x030D0000
    if (t->server != NULL) {
        r = PyObject_CallMethod(t->server, "_detach", "(O)", (PyObject *)t);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)t);
        }
        Py_XDECREF(r);
    }
#endif
    if (exc != NULL) {
        aloop_restore_exception(exc);
    }
}

int
aloop_transport_traverse(TransportObj *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    Py_VISIT(t->waiter);
    Py_VISIT(t->lost_exc);
    Py_VISIT(t->read_ctx);
    Py_VISIT(t->write_ctx);
    Py_VISIT(t->lost_ctx);
    Py_VISIT(t->dict);
    Py_VISIT(t->high_limit);
    Py_VISIT(t->low_limit);
    return t->ops ? t->ops->traverse(t, visit, arg) : 0;
}

void
aloop_transport_clear(TransportObj *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->loop);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    Py_CLEAR(t->waiter);
    Py_CLEAR(t->lost_exc);
    Py_CLEAR(t->read_ctx);
    Py_CLEAR(t->write_ctx);
    Py_CLEAR(t->lost_ctx);
    Py_CLEAR(t->dict);
    Py_CLEAR(t->high_limit);
    Py_CLEAR(t->low_limit);
    if (t->ops != NULL) {
        t->ops->clear_protocol(t);
        t->ops->clear_buffer(t);
    }
}

void
aloop_transport_dealloc(TransportObj *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    aloop_transport_clear(t);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static int
Transport_tp_clear(TransportObj *t)
{
    aloop_transport_clear(t);
    return 0;
}

/* ------------------------------------------------------------ getsets */

#define TRANSPORT_OBJ_GETTER(name)                                   \
    static PyObject *Transport_attr_##name(TransportObj *t, void *c) \
    {                                                                \
        return Py_NewRef(t->name ? (PyObject *)t->name : Py_None);   \
    }
TRANSPORT_OBJ_GETTER(sock)
TRANSPORT_OBJ_GETTER(protocol)
TRANSPORT_OBJ_GETTER(server)
TRANSPORT_OBJ_GETTER(loop)

static PyObject *
Transport_attr_high_water(TransportObj *t, void *c)
{
    return limit_get(t->high_limit, t->high_water);
}

static PyObject *
Transport_attr_low_water(TransportObj *t, void *c)
{
    return limit_get(t->low_limit, t->low_water);
}

PyGetSetDef aloop_transport_getset[] = {
    {"_sock", (getter)Transport_attr_sock, NULL, NULL, NULL},
    {"_protocol", (getter)Transport_attr_protocol, NULL, NULL, NULL},
    {"_server", (getter)Transport_attr_server, NULL, NULL, NULL},
    {"_loop", (getter)Transport_attr_loop, NULL, NULL, NULL},
    {"_high_water", (getter)Transport_attr_high_water, NULL, NULL, NULL},
    {"_low_water", (getter)Transport_attr_low_water, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyMemberDef aloop_transport_members[] = {
    {"_sock_fd", T_INT, offsetof(TransportObj, fd), READONLY, NULL},
    {"max_size", T_PYSSIZET, offsetof(TransportObj, max_size), 0, NULL},
    {"_conn_lost", T_PYSSIZET, offsetof(TransportObj, conn_lost), 0, NULL},
    {"_closing", T_BOOL, offsetof(TransportObj, closing), READONLY, NULL},
    {"_paused", T_BOOL, offsetof(TransportObj, paused), READONLY, NULL},
    {"_protocol_connected", T_BOOL, offsetof(TransportObj, protocol_connected),
     0, NULL},
    {"_protocol_paused", T_BOOL, offsetof(TransportObj, protocol_paused), 0,
     NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(TransportObj, dict), READONLY,
     NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TransportObj, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name) {#name, (PyCFunction)Transport_##name, METH_NOARGS, NULL}
#define KWARGS(name)                                       \
    {#name, (PyCFunction)(void (*)(void))Transport_##name, \
     METH_VARARGS | METH_KEYWORDS, NULL}

PyMethodDef aloop_transport_methods[] = {
    NOARGS(close),
    NOARGS(abort),
    NOARGS(is_closing),
    NOARGS(is_reading),
    NOARGS(pause_reading),
    NOARGS(resume_reading),
    {"set_protocol", (PyCFunction)Transport_set_protocol, METH_O, NULL},
    NOARGS(get_protocol),
    NOARGS(get_write_buffer_size),
    NOARGS(get_write_buffer_limits),
    KWARGS(set_write_buffer_limits),
    KWARGS(_set_write_buffer_limits),
    NOARGS(_maybe_pause_protocol),
    NOARGS(_maybe_resume_protocol),
    NOARGS(_read_ready),
    NOARGS(_write_ready),
    {"_force_close", (PyCFunction)Transport__force_close, METH_O, NULL},
    {"_fatal_error", (PyCFunction)Transport__fatal_error, METH_VARARGS, NULL},
    {"_call_connection_lost", (PyCFunction)Transport__call_connection_lost,
     METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* Concatenate NULL-terminated tables into `out` (capacity `cap`). */
static int
transport_merge(void *out, size_t elem, size_t cap, const void *a,
                const void *b)
{
    size_t n = 0;
    const void *tables[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        const char *p = tables[i];
        for (; p != NULL && *(const char *const *)p != NULL; p += elem) {
            if (n + 1 >= cap) {
                PyErr_SetString(PyExc_SystemError, "aloop: table too small");
                return -1;
            }
            memcpy((char *)out + n * elem, p, elem);
            n++;
        }
    }
    memset((char *)out + n * elem, 0, elem);
    return 0;
}

/* The C struct must match the stdlib's slots: BaseTransport._extra first,
 * then _FlowControlMixin's four slots, then our fields. */
static PyObject *
transport_bases(const char *also)
{
    PyObject *mod = PyImport_ImportModule("asyncio.transports");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *bt = PyObject_GetAttrString(mod, "BaseTransport");
    PyObject *fc = PyObject_GetAttrString(mod, "_FlowControlMixin");
    PyObject *extra = also ? PyObject_GetAttrString(mod, also) : NULL;
    Py_DECREF(mod);
    PyObject *bases = NULL;
    if (bt == NULL || fc == NULL || (also && extra == NULL)) {
        goto done;
    }
    PyObject *d =
        PyDict_GetItemString(((PyTypeObject *)bt)->tp_dict, "_extra");
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->offset !=
            offsetof(TransportObj, extra) ||
        ((PyTypeObject *)fc)->tp_basicsize !=
            (Py_ssize_t)offsetof(TransportObj, ops)) {
        PyErr_SetString(PyExc_ImportError,
                        "aloop: unexpected asyncio transport layout");
        goto done;
    }
    bases = extra ? PyTuple_Pack(2, fc, extra) : PyTuple_Pack(1, fc);
done:
    Py_XDECREF(bt);
    Py_XDECREF(fc);
    Py_XDECREF(extra);
    return bases;
}

PyTypeObject *
aloop_transport_make_type(PyObject *module, PyType_Spec *spec,
                          const char *also, PyMethodDef *methods,
                          PyGetSetDef *getset)
{
    PyObject *base = transport_bases(also);
    if (base == NULL) {
        return NULL;
    }
    /* Each transport type gets its own merged tables; they must outlive
     * the type, hence heap memory owned by the process. */
    PyMethodDef *m = PyMem_RawCalloc(64, sizeof(PyMethodDef));
    PyGetSetDef *g = PyMem_RawCalloc(32, sizeof(PyGetSetDef));
    if (m == NULL || g == NULL ||
        transport_merge(m, sizeof(*m), 64, aloop_transport_methods, methods) <
            0 ||
        transport_merge(g, sizeof(*g), 32, aloop_transport_getset, getset) <
            0) {
        PyMem_RawFree(m);
        PyMem_RawFree(g);
        Py_DECREF(base);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return NULL;
    }
    PyType_Slot slots[] = {
        {Py_tp_dealloc, aloop_transport_dealloc},
        {Py_tp_traverse, aloop_transport_traverse},
        {Py_tp_clear, Transport_tp_clear},
        {Py_tp_finalize, aloop_transport_finalize},
        {Py_tp_repr, aloop_transport_repr},
        {Py_tp_methods, m},
        {Py_tp_getset, g},
        {Py_tp_members, aloop_transport_members},
        {0, NULL},
    };
    spec->slots = slots;
    PyTypeObject *tp =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, base);
    spec->slots = NULL;
    Py_DECREF(base);
    return tp;
}
