/* stream.c -- StreamTransport, the C counterpart of selector_events'
 * _SelectorSocketTransport (TCP and Unix stream sockets).
 *
 * The type is a real subclass of asyncio.Transport: BaseTransport's one
 * slot (_extra, the extra-info dict that the inherited get_extra_info()
 * reads) is the first field of StreamObj, checked at import.  Behaviour,
 * messages and callback order are the stdlib's (3.12 semantics, with
 * 3.13's Server._attach/_detach(transport)):
 *   - connection_made, the start of reading and the creator's waiter are
 *     queued in that order (internal ready-queue events, no Handles);
 *   - one read per readiness event: Protocol gets data_received(bytes)
 *     from a per-loop 256 KiB scratch buffer, BufferedProtocol gets
 *     get_buffer(-1)/recv_into/buffer_updated(n); protocol methods are
 *     looked up once per set_protocol();
 *   - write() sends at once when nothing is buffered; the rest is queued
 *     as bytes chunks and flushed with sendmsg() on writability; flow
 *     control is _FlowControlMixin's (high/low water marks);
 *   - connection_lost is called exactly once, via the ready queue, then
 *     the socket is closed.
 * Invariants: `fd` is registered with a reader iff reading_registered and
 * with a writer iff the buffer is non-empty (and not lost).  The fd table
 * holds a reference to the transport for each registered watcher.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

#define STREAM_MAX_SIZE (256 * 1024) /* recv() size, as max_size */
#define STREAM_IOV_MAX 1024
#define LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

enum {
    EV_CONNECTION_MADE = 1,
    EV_START_READING,
    EV_WAKE_WAITER,
    EV_CONNECTION_LOST,
};

typedef struct {
    PyObject *obj; /* bytes, owned */
    Py_ssize_t off;
} stream_chunk;

typedef struct {
    PyObject_HEAD PyObject *extra; /* BaseTransport._extra: must stay first */
    LoopObj *loop; /* NULL once connection_lost ran (stdlib: _loop None) */
    PyObject *sock;
    PyObject *protocol;
    PyObject *server;
    PyObject *empty_waiter;
    PyObject *waiter;   /* creator's waiter, until woken */
    PyObject *lost_exc; /* argument of the pending connection_lost */
    PyObject *dict;
    PyObject *weakreflist;
    /* protocol methods, looked up by set_protocol() */
    PyObject *data_received;
    PyObject *get_buffer;
    PyObject *buffer_updated;
    /* write buffer: chunks[head .. head+nchunks) */
    stream_chunk *chunks;
    size_t head, nchunks, cap;
    Py_ssize_t buffer_size;
    Py_ssize_t high_water, low_water;
    Py_ssize_t conn_lost;
    int fd;
    bool buffered; /* protocol is a BufferedProtocol */
    bool protocol_connected;
    bool closing;
    bool paused;
    bool eof;
    bool protocol_paused;
    bool reading; /* reader registered */
} StreamObj;

static PyObject *
stream_call_connection_lost(StreamObj *t, PyObject *exc);

/* ------------------------------------------------------------- helpers */

static aloop_state *
stream_state(StreamObj *t)
{
    return (aloop_state *)PyType_GetModuleState(Py_TYPE(t));
}

static int
stream_queue(StreamObj *t, uint32_t event);

static int
stream_read_ready(LoopObj *loop, PyObject *owner, uint32_t ev);
static int
stream_write_ready(LoopObj *loop, PyObject *owner, uint32_t ev);

static int
stream_watch(StreamObj *t, uint32_t which, bool on)
{
    if (t->loop == NULL || t->loop->closed) {
        return 0;
    }
    aloop_fdslot *slot = aloop_fdtable_get(&t->loop->fds, t->fd);
    aloop_watcher *w = NULL;
    if (slot != NULL) {
        w = which == ALOOP_READ ? &slot->reader : &slot->writer;
    }
    bool have = w != NULL && w->obj == (PyObject *)t;
    if (have == on) {
        return 0;
    }
    if (!on && w != NULL && w->obj != (PyObject *)t) {
        return 0; /* someone else's watcher now */
    }
    PyObject *old = NULL;
    int rc = aloop_loop_set_watcher(
        t->loop, t->fd, which, on ? (PyObject *)t : NULL,
        on ? (which == ALOOP_READ ? stream_read_ready : stream_write_ready)
           : NULL,
        &old);
    Py_XDECREF(old);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    if (which == ALOOP_READ) {
        t->reading = on;
    }
    return 0;
}

static PyObject *
stream_get_write_buffer_size_obj(StreamObj *t)
{
    return PyLong_FromSsize_t(t->buffer_size);
}

static void
stream_buffer_clear(StreamObj *t)
{
    stream_chunk *chunks = t->chunks;
    size_t head = t->head, n = t->nchunks;
    t->chunks = NULL;
    t->head = t->nchunks = t->cap = 0;
    t->buffer_size = 0;
    for (size_t i = 0; i < n; i++) {
        Py_DECREF(chunks[head + i].obj);
    }
    PyMem_Free(chunks);
}

/* Append data[off:] (a bytes object, or copied into one). */
static int
stream_buffer_append(StreamObj *t, PyObject *data, const char *buf,
                     Py_ssize_t len)
{
    if (t->head + t->nchunks == t->cap) {
        if (t->head > 0) {
            memmove(t->chunks, t->chunks + t->head,
                    t->nchunks * sizeof(stream_chunk));
            t->head = 0;
        }
        if (t->nchunks == t->cap) {
            size_t ncap = t->cap ? t->cap * 2 : 8;
            stream_chunk *n = PyMem_Realloc(t->chunks, ncap * sizeof(*n));
            if (n == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            t->chunks = n;
            t->cap = ncap;
        }
    }
    stream_chunk *c = &t->chunks[t->head + t->nchunks];
    if (data != NULL && PyBytes_CheckExact(data)) {
        c->obj = Py_NewRef(data);
        c->off = buf - PyBytes_AS_STRING(data);
    } else {
        c->obj = PyBytes_FromStringAndSize(buf, len);
        if (c->obj == NULL) {
            return -1;
        }
        c->off = 0;
    }
    t->nchunks++;
    t->buffer_size += len;
    return 0;
}

/* Drop `sent` bytes from the front of the buffer. */
static void
stream_buffer_consume(StreamObj *t, Py_ssize_t sent)
{
    t->buffer_size -= sent;
    while (sent > 0 && t->nchunks) {
        stream_chunk *c = &t->chunks[t->head];
        Py_ssize_t avail = PyBytes_GET_SIZE(c->obj) - c->off;
        if (avail > sent) {
            c->off += sent;
            break;
        }
        sent -= avail;
        PyObject *obj = c->obj;
        t->head++;
        t->nchunks--;
        Py_DECREF(obj); /* bytes: no code runs */
    }
    if (t->nchunks == 0) {
        t->head = 0;
    }
}

static int
stream_call_handler(StreamObj *t, const char *message, PyObject *exc)
{
    aloop_state *st = stream_state(t);
    PyObject *ctx = Py_BuildValue(
        "{sssOsOsO}", "message", message, "exception", exc, "transport",
        (PyObject *)t, "protocol", t->protocol ? t->protocol : Py_None);
    if (ctx == NULL) {
        return -1;
    }
    int rc = -1;
    if (t->loop != NULL) {
        rc = aloop_loop_call_exception_handler(t->loop, ctx);
    }
    (void)st;
    Py_DECREF(ctx);
    return rc;
}

/* _force_close(exc) */
static int
stream_force_close(StreamObj *t, PyObject *exc)
{
    if (t->conn_lost || t->loop == NULL) {
        return 0;
    }
    if (t->nchunks) {
        stream_buffer_clear(t);
        if (stream_watch(t, ALOOP_WRITE, false) < 0) {
            return -1;
        }
    }
    if (!t->closing) {
        t->closing = true;
        if (stream_watch(t, ALOOP_READ, false) < 0) {
            return -1;
        }
    }
    t->conn_lost++;
    Py_XSETREF(t->lost_exc, Py_XNewRef(exc));
    return stream_queue(t, EV_CONNECTION_LOST);
}

/* _fatal_error(exc, message): OSErrors are only logged in debug mode. */
static int
stream_fatal_error(StreamObj *t, PyObject *exc, const char *message)
{
    if (PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_OSError)) {
        if (t->loop != NULL && t->loop->debug) {
            aloop_state *st = stream_state(t);
            PyObject *kw = Py_BuildValue("{sO}", "exc_info", Py_True);
            PyObject *meth = PyObject_GetAttrString(st->logger, "debug");
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
    } else if (stream_call_handler(t, message, exc) < 0) {
        return -1;
    }
    return stream_force_close(t, exc);
}

/* The current exception becomes a fatal error; KeyboardInterrupt and
 * SystemExit propagate. */
static int
stream_fatal_current(StreamObj *t, const char *message)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = stream_fatal_error(t, exc, message);
    Py_DECREF(exc);
    return rc;
}

static int
stream_fatal_errno(StreamObj *t, int err, const char *message)
{
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return stream_fatal_current(t, message);
}

/* _maybe_pause_protocol / _maybe_resume_protocol */
static int
stream_protocol_flow(StreamObj *t, bool pause)
{
    const char *meth = pause ? "pause_writing" : "resume_writing";
    t->protocol_paused = pause;
    PyObject *r = PyObject_CallMethod(t->protocol, meth, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = stream_call_handler(t,
                                 pause ? "protocol.pause_writing() failed"
                                       : "protocol.resume_writing() failed",
                                 exc);
    Py_DECREF(exc);
    return rc;
}

static int
stream_maybe_pause(StreamObj *t)
{
    if (t->buffer_size <= t->high_water || t->protocol_paused) {
        return 0;
    }
    return stream_protocol_flow(t, true);
}

static int
stream_maybe_resume(StreamObj *t)
{
    if (!t->protocol_paused || t->buffer_size > t->low_water) {
        return 0;
    }
    return stream_protocol_flow(t, false);
}

static int
stream_shutdown_write(StreamObj *t)
{
    PyObject *r = PyObject_CallMethod(t->sock, "shutdown", "i", SHUT_WR);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* -------------------------------------------------------------- reading */

static int
stream_on_eof(StreamObj *t)
{
    if (t->loop->debug && aloop_log(stream_state(t), "debug",
                                    "%r received EOF", (PyObject *)t) < 0) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(t->protocol, "eof_received", NULL);
    if (r == NULL) {
        return stream_fatal_current(
            t, "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return stream_fatal_current(
            t, "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        return stream_watch(t, ALOOP_READ, false);
    }
    PyObject *c = PyObject_CallMethod((PyObject *)t, "close", NULL);
    Py_XDECREF(c);
    return c ? 0 : -1;
}

static int
stream_read_buffered(StreamObj *t)
{
    PyObject *arg = PyLong_FromLong(-1);
    PyObject *buf = arg ? PyObject_CallOneArg(t->get_buffer, arg) : NULL;
    Py_XDECREF(arg);
    Py_buffer view;
    if (buf == NULL || PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        Py_XDECREF(buf);
        return stream_fatal_current(
            t, "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_DECREF(buf);
    if (view.len == 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError,
                        "get_buffer() returned an empty buffer");
        return stream_fatal_current(
            t, "Fatal error: protocol.get_buffer() call failed.");
    }
    ssize_t n;
    do {
        n = recv(t->fd, view.buf, (size_t)view.len, 0);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    PyBuffer_Release(&view);
    if (n < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(t, err,
                                  "Fatal read error on socket transport");
    }
    if (n == 0) {
        return stream_on_eof(t);
    }
    PyObject *nobj = PyLong_FromSsize_t(n);
    PyObject *r = nobj ? PyObject_CallOneArg(t->buffer_updated, nobj) : NULL;
    Py_XDECREF(nobj);
    if (r == NULL) {
        return stream_fatal_current(
            t, "Fatal error: protocol.buffer_updated() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

static int
stream_read_ready(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    StreamObj *t = (StreamObj *)owner;
    if (t->conn_lost || t->loop == NULL) {
        return 0;
    }
    if (t->buffered) {
        return stream_read_buffered(t);
    }
    if (loop->read_buf == NULL) {
        loop->read_buf = PyMem_RawMalloc(STREAM_MAX_SIZE);
        if (loop->read_buf == NULL) {
            PyErr_NoMemory();
            return stream_fatal_current(
                t, "Fatal read error on socket transport");
        }
    }
    ssize_t n;
    do {
        n = recv(t->fd, loop->read_buf, STREAM_MAX_SIZE, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        return stream_fatal_errno(t, errno,
                                  "Fatal read error on socket transport");
    }
    if (n == 0) {
        return stream_on_eof(t);
    }
    PyObject *data = PyBytes_FromStringAndSize(loop->read_buf, n);
    if (data == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(t->data_received, data);
    Py_DECREF(data);
    if (r == NULL) {
        return stream_fatal_current(
            t, "Fatal error: protocol.data_received() call failed.");
    }
    Py_DECREF(r);
    return 0;
}

/* -------------------------------------------------------------- writing */

/* Flush what sendmsg() takes; 0 or -1 (exception set). */
static int
stream_write_ready(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    StreamObj *t = (StreamObj *)owner;
    if (t->conn_lost || t->nchunks == 0) {
        return 0;
    }
    struct iovec iov[STREAM_IOV_MAX];
    size_t n = t->nchunks < STREAM_IOV_MAX ? t->nchunks : STREAM_IOV_MAX;
    for (size_t i = 0; i < n; i++) {
        stream_chunk *c = &t->chunks[t->head + i];
        iov[i].iov_base = PyBytes_AS_STRING(c->obj) + c->off;
        iov[i].iov_len = (size_t)(PyBytes_GET_SIZE(c->obj) - c->off);
    }
    struct msghdr msg = {0};
    msg.msg_iov = iov;
    msg.msg_iovlen = n;
    ssize_t sent;
    do {
        sent = sendmsg(t->fd, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        int err = errno;
        if (stream_watch(t, ALOOP_WRITE, false) < 0) {
            return -1;
        }
        stream_buffer_clear(t);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        if (aloop_error_is_fatal()) {
            return -1;
        }
        PyObject *exc = aloop_fetch_exception();
        int rc = stream_fatal_error(t, exc,
                                    "Fatal write error on socket transport");
        if (rc == 0 && t->empty_waiter != NULL) {
            PyObject *r = PyObject_CallMethod(t->empty_waiter, "set_exception",
                                              "(O)", exc);
            Py_XDECREF(r);
            rc = r ? 0 : -1;
        }
        Py_DECREF(exc);
        return rc;
    }
    stream_buffer_consume(t, sent);
    if (stream_maybe_resume(t) < 0) { /* may append to the buffer */
        return -1;
    }
    if (t->nchunks) {
        return 0;
    }
    if (stream_watch(t, ALOOP_WRITE, false) < 0) {
        return -1;
    }
    if (t->empty_waiter != NULL) {
        PyObject *r =
            PyObject_CallMethod(t->empty_waiter, "set_result", "(O)", Py_None);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    if (t->closing) {
        PyObject *r = stream_call_connection_lost(t, Py_None);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    if (t->eof) {
        return stream_shutdown_write(t);
    }
    return 0;
}

/* write(data): 0, or -1 with an exception for the caller. */
static int
stream_write(StreamObj *t, PyObject *data)
{
    Py_buffer view;
    const char *buf;
    Py_ssize_t len;
    bool have_view = false;
    if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    } else if (PyBytes_Check(data) || PyByteArray_Check(data) ||
               PyMemoryView_Check(data)) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        have_view = true;
        buf = view.buf;
        len = view.len;
    } else {
        PyErr_Format(PyExc_TypeError,
                     "data argument must be a bytes-like object, not '%.200s'",
                     Py_TYPE(data)->tp_name);
        return -1;
    }
    int rc = 0;
    if (t->eof) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot call write() after write_eof()");
        rc = -1;
        goto done;
    }
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "unable to write; sendfile is in progress");
        rc = -1;
        goto done;
    }
    if (len == 0) {
        goto done;
    }
    if (t->conn_lost) {
        if (t->conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
            rc = aloop_log(stream_state(t), "warning", "%s",
                           stream_state(t)->str_send_raised);
        }
        t->conn_lost++;
        goto done;
    }
    if (t->nchunks == 0) {
        ssize_t n;
        do {
            n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                rc = stream_fatal_errno(
                    t, errno, "Fatal write error on socket transport");
                goto done;
            }
            n = 0;
        }
        if (n == len) {
            goto done;
        }
        buf += n;
        len -= n;
        if (stream_watch(t, ALOOP_WRITE, true) < 0) {
            rc = -1;
            goto done;
        }
    }
    if (stream_buffer_append(t, have_view ? NULL : data, buf, len) < 0) {
        rc = -1;
        goto done;
    }
    rc = stream_maybe_pause(t);
done:
    if (have_view) {
        PyBuffer_Release(&view);
    }
    return rc;
}

/* ---------------------------------------------------- lifecycle events */

static PyObject *
stream_call_connection_lost(StreamObj *t, PyObject *exc)
{
    aloop_state *st = stream_state(t);
    PyObject *res = NULL;
    Py_INCREF(t);
    if (t->protocol_connected && t->protocol != NULL) {
        res = PyObject_CallMethod(t->protocol, "connection_lost", "(O)",
                                  exc ? exc : Py_None);
    } else {
        res = Py_NewRef(Py_None);
    }
    /* finally: */
    PyObject *pending = res ? NULL : aloop_fetch_exception();
    (void)stream_watch(t, ALOOP_READ, false);
    (void)stream_watch(t, ALOOP_WRITE, false);
    PyObject *sock = t->sock, *server = t->server;
    t->sock = NULL;
    t->server = NULL;
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    Py_CLEAR(t->loop);
    int rc = 0;
    if (sock != NULL) {
        PyObject *r = PyObject_CallMethod(sock, "close", NULL);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
        Py_DECREF(sock);
    }
    if (server != NULL) {
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r =
            PyObject_CallMethod(server, "_detach", "(O)", (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethod(server, "_detach", NULL);
#endif
        rc = r ? rc : -1;
        Py_XDECREF(r);
        Py_DECREF(server);
    }
    if (pending != NULL) {
        if (PyErr_Occurred()) {
            PyErr_Clear();
        }
        aloop_restore_exception(pending);
        Py_XDECREF(res);
        Py_DECREF(t);
        return NULL;
    }
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
    (void)st;
    Py_DECREF(t);
    if (rc < 0) {
        Py_XDECREF(res);
        return NULL;
    }
    return res;
}

static int
stream_event(LoopObj *loop, PyObject *owner, uint32_t event)
{
    StreamObj *t = (StreamObj *)owner;
    PyObject *r = NULL;
    switch (event) {
    case EV_CONNECTION_MADE:
        if (t->protocol == NULL) {
            return 0;
        }
        r = PyObject_CallMethod(t->protocol, "connection_made", "(O)",
                                (PyObject *)t);
        break;
    case EV_START_READING:
        /* _add_reader: only if still reading (not paused, not closing) */
        if (t->closing || t->paused || t->loop == NULL) {
            return 0;
        }
        return stream_watch(t, ALOOP_READ, true) < 0
                   ? aloop_loop_report_exception(loop, "Exception in callback")
                   : 0;
    case EV_WAKE_WAITER: {
        PyObject *w = t->waiter;
        t->waiter = NULL;
        if (w == NULL) {
            return 0;
        }
        r = PyObject_CallFunctionObjArgs(stream_state(t)->set_result_unless, w,
                                         Py_None, NULL);
        Py_DECREF(w);
        break;
    }
    case EV_CONNECTION_LOST: {
        PyObject *exc = t->lost_exc;
        t->lost_exc = NULL;
        r = stream_call_connection_lost(t, exc ? exc : Py_None);
        Py_XDECREF(exc);
        break;
    }
    default:
        return 0;
    }
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    return aloop_loop_report_exception(loop, "Exception in callback");
}

static int
stream_queue(StreamObj *t, uint32_t event)
{
    LoopObj *loop = t->loop;
    if (loop == NULL || aloop_loop_check_closed(loop) < 0) {
        return loop == NULL ? 0 : -1;
    }
    int rc =
        aloop_readyq_push(&loop->ready, (PyObject *)t, stream_event, event);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ Python methods */

static PyObject *
StreamObj_write(StreamObj *t, PyObject *data)
{
    if (stream_write(t, data) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_writelines(StreamObj *t, PyObject *list_of_data)
{
    if (t->eof) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot call writelines() after write_eof()");
        return NULL;
    }
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "unable to writelines; sendfile is in progress");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(list_of_data,
                                    "writelines() argument "
                                    "must be iterable");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int rc = 0;
    if (t->conn_lost || t->loop == NULL) {
        /* like write(): count and warn, send nothing */
        for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
            rc = stream_write(t, items[i]);
        }
        Py_DECREF(seq);
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    bool was_empty = t->nchunks == 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
            rc = -1;
            break;
        }
        if (view.len) {
            rc = stream_buffer_append(
                t, PyBytes_CheckExact(items[i]) ? items[i] : NULL, view.buf,
                view.len);
        }
        PyBuffer_Release(&view);
    }
    Py_DECREF(seq);
    if (rc < 0) {
        return NULL;
    }
    if (t->nchunks && was_empty) {
        /* one gathered sendmsg(), then wait for writability if needed */
        if (stream_write_ready(t->loop, (PyObject *)t, ALOOP_WRITE) < 0) {
            return NULL;
        }
        if (t->nchunks && !t->conn_lost &&
            stream_watch(t, ALOOP_WRITE, true) < 0) {
            return NULL;
        }
    }
    if (stream_maybe_pause(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_write_eof(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof) {
        Py_RETURN_NONE;
    }
    t->eof = true;
    if (t->nchunks == 0 && stream_shutdown_write(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_can_write_eof(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
StreamObj_close(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing) {
        Py_RETURN_NONE;
    }
    t->closing = true;
    if (stream_watch(t, ALOOP_READ, false) < 0) {
        return NULL;
    }
    if (t->nchunks == 0) {
        t->conn_lost++;
        if (stream_watch(t, ALOOP_WRITE, false) < 0) {
            return NULL;
        }
        Py_XSETREF(t->lost_exc, Py_NewRef(Py_None));
        if (stream_queue(t, EV_CONNECTION_LOST) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_abort(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (stream_force_close(t, Py_None) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__force_close(StreamObj *t, PyObject *exc)
{
    if (stream_force_close(t, exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__fatal_error(StreamObj *t, PyObject *args)
{
    PyObject *exc;
    const char *message = "Fatal error on transport";
    if (!PyArg_ParseTuple(args, "O|s:_fatal_error", &exc, &message) ||
        stream_fatal_error(t, exc, message) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__call_connection_lost(StreamObj *t, PyObject *exc)
{
    PyObject *r = stream_call_connection_lost(t, exc);
    Py_XDECREF(r);
    return r ? Py_NewRef(Py_None) : NULL;
}

static PyObject *
StreamObj_is_closing(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
StreamObj_is_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->closing && !t->paused);
}

static PyObject *
StreamObj_pause_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = true;
    if (stream_watch(t, ALOOP_READ, false) < 0) {
        return NULL;
    }
    if (t->loop != NULL && t->loop->debug &&
        aloop_log(stream_state(t), "debug", "%r pauses reading",
                  (PyObject *)t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_resume_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = false;
    if (stream_watch(t, ALOOP_READ, true) < 0) {
        return NULL;
    }
    if (t->loop != NULL && t->loop->debug &&
        aloop_log(stream_state(t), "debug", "%r resumes reading",
                  (PyObject *)t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
stream_set_protocol(StreamObj *t, PyObject *protocol)
{
    aloop_state *st = stream_state(t);
    int buffered = PyObject_IsInstance(protocol, st->BufferedProtocol);
    if (buffered < 0) {
        return -1;
    }
    PyObject *dr = NULL, *gb = NULL, *bu = NULL;
    if (buffered) {
        gb = PyObject_GetAttrString(protocol, "get_buffer");
        bu = gb ? PyObject_GetAttrString(protocol, "buffer_updated") : NULL;
        if (bu == NULL) {
            Py_XDECREF(gb);
            return -1;
        }
    } else {
        /* A protocol without data_received fails on the first read, as in
         * the stdlib; don't refuse it here. */
        dr = PyObject_GetAttrString(protocol, "data_received");
        if (dr == NULL) {
            PyErr_Clear();
        }
    }
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_XSETREF(t->data_received, dr);
    Py_XSETREF(t->get_buffer, gb);
    Py_XSETREF(t->buffer_updated, bu);
    t->buffered = buffered;
    t->protocol_connected = true;
    return 0;
}

static PyObject *
StreamObj_set_protocol(StreamObj *t, PyObject *protocol)
{
    if (stream_set_protocol(t, protocol) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj_get_protocol(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
StreamObj_get_write_buffer_size(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return stream_get_write_buffer_size_obj(t);
}

static PyObject *
StreamObj_get_write_buffer_limits(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

/* _set_write_buffer_limits(high=None, low=None) */
static int
stream_set_limits(StreamObj *t, PyObject *high, PyObject *low)
{
    PyObject *h = NULL, *l = NULL;
    int rc = -1;
    if (high == NULL || high == Py_None) {
        if (low == NULL || low == Py_None) {
            h = PyLong_FromLong(64 * 1024);
        } else {
            PyObject *four = PyLong_FromLong(4);
            h = four ? PyNumber_Multiply(four, low) : NULL;
            Py_XDECREF(four);
        }
    } else {
        h = Py_NewRef(high);
    }
    if (h == NULL) {
        return -1;
    }
    if (low == NULL || low == Py_None) {
        PyObject *four = PyLong_FromLong(4);
        l = four ? PyNumber_FloorDivide(h, four) : NULL;
        Py_XDECREF(four);
    } else {
        l = Py_NewRef(low);
    }
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
    Py_ssize_t hv = PyNumber_AsSsize_t(h, PyExc_OverflowError);
    Py_ssize_t lv = PyNumber_AsSsize_t(l, PyExc_OverflowError);
    if ((hv == -1 || lv == -1) && PyErr_Occurred()) {
        goto done;
    }
    t->high_water = hv;
    t->low_water = lv;
    rc = 0;
done:
    Py_XDECREF(h);
    Py_XDECREF(l);
    return rc;
}

static PyObject *
StreamObj_set_write_buffer_limits(StreamObj *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = NULL, *low = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:set_write_buffer_limits",
                                     kwlist, &high, &low) ||
        stream_set_limits(t, high, low) < 0 || stream_maybe_pause(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__set_write_buffer_limits(StreamObj *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = NULL, *low = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO:_set_write_buffer_limits",
                                     kwlist, &high, &low) ||
        stream_set_limits(t, high, low) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__maybe_pause_protocol(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return stream_maybe_pause(t) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
StreamObj__maybe_resume_protocol(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return stream_maybe_resume(t) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
StreamObj__make_empty_waiter(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    if (t->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Transport is closed");
        return NULL;
    }
    PyObject *fut =
        PyObject_CallMethod((PyObject *)t->loop, "create_future", NULL);
    if (fut == NULL) {
        return NULL;
    }
    if (t->nchunks == 0) {
        PyObject *r = PyObject_CallMethod(fut, "set_result", "(O)", Py_None);
        if (r == NULL) {
            Py_DECREF(fut);
            return NULL;
        }
        Py_DECREF(r);
    }
    t->empty_waiter = Py_NewRef(fut);
    return fut;
}

static PyObject *
StreamObj__reset_empty_waiter(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(t->empty_waiter);
    Py_RETURN_NONE;
}

static PyObject *
StreamObj__read_ready(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->loop == NULL) {
        Py_RETURN_NONE;
    }
    return stream_read_ready(t->loop, (PyObject *)t, ALOOP_READ) < 0
               ? NULL
               : Py_NewRef(Py_None);
}

static PyObject *
StreamObj__write_ready(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->loop == NULL) {
        Py_RETURN_NONE;
    }
    return stream_write_ready(t->loop, (PyObject *)t, ALOOP_WRITE) < 0
               ? NULL
               : Py_NewRef(Py_None);
}

static bool
stream_polling(StreamObj *t, uint32_t which)
{
    if (t->loop == NULL) {
        return false;
    }
    aloop_fdslot *slot = aloop_fdtable_get(&t->loop->fds, t->fd);
    return slot != NULL && (slot->mask & which);
}

static PyObject *
StreamObj_repr(StreamObj *t)
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
            stream_polling(t, ALOOP_READ) ? "polling" : "idle",
            stream_polling(t, ALOOP_WRITE) ? "polling" : "idle",
            t->buffer_size);
    }
    return PyUnicode_FromFormat("<%s%s fd=%d>", name, state, t->fd);
}

/* __del__: an unclosed transport warns and closes its socket. */
static void
StreamObj_finalize(StreamObj *t)
{
    if (t->sock == NULL) {
        return;
    }
    PyObject *exc = aloop_fetch_exception();
    if (PyErr_WarnFormat(PyExc_ResourceWarning, 1, "unclosed transport %R",
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

static int
StreamObj_traverse(StreamObj *t, visitproc visit, void *arg)
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
    Py_VISIT(t->dict);
    Py_VISIT(t->data_received);
    Py_VISIT(t->get_buffer);
    Py_VISIT(t->buffer_updated);
    for (size_t i = 0; i < t->nchunks; i++) {
        Py_VISIT(t->chunks[t->head + i].obj);
    }
    return 0;
}

static int
StreamObj_clear(StreamObj *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->loop);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    Py_CLEAR(t->waiter);
    Py_CLEAR(t->lost_exc);
    Py_CLEAR(t->dict);
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
    stream_buffer_clear(t);
    return 0;
}

static void
StreamObj_dealloc(StreamObj *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return;
    }
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    (void)StreamObj_clear(t);
    tp->tp_free(t);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------ getsets */

#define STREAM_OBJ_GETTER(name, field)                               \
    static PyObject *StreamObj_attr_##name(StreamObj *t, void *c)    \
    {                                                                \
        return Py_NewRef(t->field ? (PyObject *)t->field : Py_None); \
    }
STREAM_OBJ_GETTER(sock, sock)
STREAM_OBJ_GETTER(protocol, protocol)
STREAM_OBJ_GETTER(server, server)
STREAM_OBJ_GETTER(loop, loop)
STREAM_OBJ_GETTER(empty_waiter, empty_waiter)

static PyObject *
StreamObj_get_buffer_snapshot(StreamObj *t, void *c)
{
    /* _buffer: the pending chunks, as a list of memoryviews (truthy iff
     * data is buffered, like the stdlib's deque). */
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < t->nchunks; i++) {
        stream_chunk *ch = &t->chunks[t->head + i];
        PyObject *mv = PyMemoryView_FromObject(ch->obj);
        PyObject *part =
            mv ? PySequence_GetSlice(mv, ch->off, PyBytes_GET_SIZE(ch->obj))
               : NULL;
        Py_XDECREF(mv);
        if (part == NULL || PyList_Append(list, part) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(part);
    }
    return list;
}

static PyGetSetDef StreamObj_getset[] = {
    {"_sock", (getter)StreamObj_attr_sock, NULL, NULL, NULL},
    {"_protocol", (getter)StreamObj_attr_protocol, NULL, NULL, NULL},
    {"_server", (getter)StreamObj_attr_server, NULL, NULL, NULL},
    {"_loop", (getter)StreamObj_attr_loop, NULL, NULL, NULL},
    {"_empty_waiter", (getter)StreamObj_attr_empty_waiter, NULL, NULL, NULL},
    {"_buffer", (getter)StreamObj_get_buffer_snapshot, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef StreamObj_members[] = {
    {"_sock_fd", T_INT, offsetof(StreamObj, fd), READONLY, NULL},
    {"_conn_lost", T_PYSSIZET, offsetof(StreamObj, conn_lost), 0, NULL},
    {"_closing", T_BOOL, offsetof(StreamObj, closing), READONLY, NULL},
    {"_paused", T_BOOL, offsetof(StreamObj, paused), READONLY, NULL},
    {"_eof", T_BOOL, offsetof(StreamObj, eof), READONLY, NULL},
    {"_protocol_connected", T_BOOL, offsetof(StreamObj, protocol_connected), 0,
     NULL},
    {"_protocol_paused", T_BOOL, offsetof(StreamObj, protocol_paused), 0,
     NULL},
    {"_high_water", T_PYSSIZET, offsetof(StreamObj, high_water), READONLY,
     NULL},
    {"_low_water", T_PYSSIZET, offsetof(StreamObj, low_water), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(StreamObj, dict), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(StreamObj, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define NOARGS(name) {#name, (PyCFunction)StreamObj_##name, METH_NOARGS, NULL}

static PyMethodDef StreamObj_methods[] = {
    {"write", (PyCFunction)StreamObj_write, METH_O, NULL},
    {"writelines", (PyCFunction)StreamObj_writelines, METH_O, NULL},
    NOARGS(write_eof),
    NOARGS(can_write_eof),
    NOARGS(close),
    NOARGS(abort),
    NOARGS(is_closing),
    NOARGS(is_reading),
    NOARGS(pause_reading),
    NOARGS(resume_reading),
    {"set_protocol", (PyCFunction)StreamObj_set_protocol, METH_O, NULL},
    NOARGS(get_protocol),
    NOARGS(get_write_buffer_size),
    NOARGS(get_write_buffer_limits),
    {"set_write_buffer_limits",
     (PyCFunction)(void (*)(void))StreamObj_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_set_write_buffer_limits",
     (PyCFunction)(void (*)(void))StreamObj__set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    NOARGS(_maybe_pause_protocol),
    NOARGS(_maybe_resume_protocol),
    NOARGS(_make_empty_waiter),
    NOARGS(_reset_empty_waiter),
    NOARGS(_read_ready),
    NOARGS(_write_ready),
    {"_force_close", (PyCFunction)StreamObj__force_close, METH_O, NULL},
    {"_fatal_error", (PyCFunction)StreamObj__fatal_error, METH_VARARGS, NULL},
    {"_call_connection_lost", (PyCFunction)StreamObj__call_connection_lost,
     METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_dealloc, StreamObj_dealloc},
    {Py_tp_traverse, StreamObj_traverse},
    {Py_tp_clear, StreamObj_clear},
    {Py_tp_finalize, StreamObj_finalize},
    {Py_tp_repr, StreamObj_repr},
    {Py_tp_methods, StreamObj_methods},
    {Py_tp_getset, StreamObj_getset},
    {Py_tp_members, StreamObj_members},
    {0, NULL},
};

/* Not immutable: asyncio.Transport is a mutable base (see handle.c). */
static PyType_Spec stream_spec = {
    .name = "aloop._core.StreamTransport",
    .basicsize = sizeof(StreamObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = stream_slots,
};

/* --------------------------------------------------------- construction */

static int
stream_extra_put(PyObject *extra, const char *key, PyObject *sock,
                 const char *meth)
{
    PyObject *v = PyObject_CallMethod(sock, meth, NULL);
    if (v == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError)) {
            return -1;
        }
        PyErr_Clear();
        v = Py_NewRef(Py_None);
    }
    int rc = PyDict_SetItemString(extra, key, v);
    Py_DECREF(v);
    return rc;
}

/* _SelectorSocketTransport(loop, sock, protocol, waiter, extra, server) */
PyObject *
aloop_stream_new(LoopObj *loop, PyObject *sock, PyObject *protocol,
                 PyObject *waiter, PyObject *extra, PyObject *server)
{
    aloop_state *st = loop->state;
    StreamObj *t = PyObject_GC_New(StreamObj, st->StreamType);
    if (t == NULL) {
        return NULL;
    }
    memset((char *)t + sizeof(PyObject), 0,
           sizeof(StreamObj) - sizeof(PyObject));
    t->fd = -1;
    PyObject_GC_Track(t);
    t->loop = (LoopObj *)Py_NewRef((PyObject *)loop);
    t->extra = (extra && extra != Py_None) ? Py_NewRef(extra) : PyDict_New();
    if (t->extra == NULL) {
        goto error;
    }
    PyObject *tsock = PyObject_CallOneArg(st->TransportSocket, sock);
    if (tsock == NULL || PyDict_SetItemString(t->extra, "socket", tsock) < 0) {
        Py_XDECREF(tsock);
        goto error;
    }
    Py_DECREF(tsock);
    if (stream_extra_put(t->extra, "sockname", sock, "getsockname") < 0) {
        goto error;
    }
    int has_peer = PyDict_Contains(t->extra, st->str_peername);
    if (has_peer < 0 ||
        (!has_peer &&
         stream_extra_put(t->extra, "peername", sock, "getpeername") < 0)) {
        goto error;
    }
    t->sock = Py_NewRef(sock);
    PyObject *fdobj = PyObject_CallMethod(sock, "fileno", NULL);
    if (fdobj == NULL) {
        goto error;
    }
    t->fd = (int)PyLong_AsLong(fdobj);
    if (t->fd == -1 && PyErr_Occurred()) {
        Py_DECREF(fdobj);
        goto error;
    }
    if (stream_set_protocol(t, protocol) < 0 ||
        stream_set_limits(t, NULL, NULL) < 0) {
        Py_DECREF(fdobj);
        goto error;
    }
    if (server != NULL && server != Py_None) {
        t->server = Py_NewRef(server);
#if PY_VERSION_HEX >= 0x030D0000
        PyObject *r =
            PyObject_CallMethod(server, "_attach", "(O)", (PyObject *)t);
#else
        PyObject *r = PyObject_CallMethod(server, "_attach", NULL);
#endif
        if (r == NULL) {
            Py_DECREF(fdobj);
            goto error;
        }
        Py_DECREF(r);
    }
    /* loop._transports[fd] = self */
    PyObject *transports =
        PyObject_GetAttrString((PyObject *)loop, "_transports");
    int rc =
        transports ? PyObject_SetItem(transports, fdobj, (PyObject *)t) : -1;
    Py_XDECREF(transports);
    Py_DECREF(fdobj);
    if (rc < 0) {
        goto error;
    }
    PyObject *r = PyObject_CallOneArg(st->set_nodelay, sock);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    if (waiter != NULL && waiter != Py_None) {
        t->waiter = Py_NewRef(waiter);
    }
    if (stream_queue(t, EV_CONNECTION_MADE) < 0 ||
        stream_queue(t, EV_START_READING) < 0 ||
        (t->waiter != NULL && stream_queue(t, EV_WAKE_WAITER) < 0)) {
        goto error;
    }
    return (PyObject *)t;
error:
    /* Don't warn about the socket we were handed: the caller owns it. */
    Py_CLEAR(t->sock);
    Py_DECREF(t);
    return NULL;
}

/* loop._make_socket_transport(sock, protocol, waiter=None, *, extra=None,
 * server=None) */
static PyObject *
LoopObj__make_socket_transport(LoopObj *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"sock",  "protocol", "waiter",
                             "extra", "server",   NULL};
    PyObject *sock, *protocol, *waiter = Py_None, *extra = Py_None,
                               *server = Py_None;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OO|O$OO:_make_socket_transport", kwlist, &sock,
            &protocol, &waiter, &extra, &server)) {
        return NULL;
    }
    return aloop_stream_new(self, sock, protocol, waiter, extra, server);
}

/* loop._make_ssl_transport(rawsock, protocol, sslcontext, waiter=None, *,
 *     server_side=False, server_hostname=None, extra=None, server=None,
 *     ssl_handshake_timeout=..., ssl_shutdown_timeout=...)
 * The stdlib's sslproto.SSLProtocol over a C StreamTransport. */
static PyObject *
LoopObj__make_ssl_transport(LoopObj *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rawsock",
                             "protocol",
                             "sslcontext",
                             "waiter",
                             "server_side",
                             "server_hostname",
                             "extra",
                             "server",
                             "ssl_handshake_timeout",
                             "ssl_shutdown_timeout",
                             NULL};
    aloop_state *st = self->state;
    PyObject *rawsock, *protocol, *sslcontext, *waiter = Py_None;
    PyObject *server_side = Py_False, *server_hostname = Py_None;
    PyObject *extra = Py_None, *server = Py_None;
    PyObject *hs = st->ssl_handshake_timeout, *sd = st->ssl_shutdown_timeout;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OOO|O$OOOOOO:_make_ssl_transport", kwlist, &rawsock,
            &protocol, &sslcontext, &waiter, &server_side, &server_hostname,
            &extra, &server, &hs, &sd)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *r = PyObject_CallMethodOneArg(
        (PyObject *)self, st->str_ensure_fd_no_transport, rawsock);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
#endif
    PyObject *pargs = PyTuple_Pack(6, (PyObject *)self, protocol, sslcontext,
                                   waiter, server_side, server_hostname);
    PyObject *pkw = Py_BuildValue("{sOsO}", "ssl_handshake_timeout", hs,
                                  "ssl_shutdown_timeout", sd);
    PyObject *ssl_protocol =
        (pargs && pkw) ? PyObject_Call(st->SSLProtocol, pargs, pkw) : NULL;
    Py_XDECREF(pargs);
    Py_XDECREF(pkw);
    if (ssl_protocol == NULL) {
        return NULL;
    }
    PyObject *transport =
        aloop_stream_new(self, rawsock, ssl_protocol, Py_None, extra, server);
    PyObject *app =
        transport ? PyObject_GetAttrString(ssl_protocol, "_app_transport")
                  : NULL;
    Py_XDECREF(transport);
    Py_DECREF(ssl_protocol);
    return app;
}

PyMethodDef aloop_stream_loop_methods[] = {
    {"_make_ssl_transport",
     (PyCFunction)(void (*)(void))LoopObj__make_ssl_transport,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_make_socket_transport",
     (PyCFunction)(void (*)(void))LoopObj__make_socket_transport,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

/* Offsets must match asyncio.BaseTransport's slots. */
int
aloop_stream_setup_types(PyObject *module, aloop_state *st)
{
    PyObject *base = NULL,
             *transports = PyImport_ImportModule("asyncio.transports");
    if (transports == NULL) {
        return -1;
    }
    base = PyObject_GetAttrString(transports, "Transport");
    PyObject *bt = PyObject_GetAttrString(transports, "BaseTransport");
    Py_DECREF(transports);
    int rc = -1;
    if (base == NULL || bt == NULL) {
        goto done;
    }
    PyObject *d =
        PyDict_GetItemString(((PyTypeObject *)bt)->tp_dict, "_extra");
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
        ((PyMemberDescrObject *)d)->d_member->offset !=
            offsetof(StreamObj, extra) ||
        ((PyTypeObject *)base)->tp_basicsize !=
            (Py_ssize_t)offsetof(StreamObj, loop)) {
        PyErr_SetString(PyExc_ImportError,
                        "aloop: unexpected asyncio.Transport layout");
        goto done;
    }
    st->StreamType =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &stream_spec, base);
    if (st->StreamType == NULL) {
        goto done;
    }
    PyObject *mode = NULL;
    PyObject *constants = PyImport_ImportModule("asyncio.constants");
    PyObject *sm =
        constants ? PyObject_GetAttrString(constants, "_SendfileMode") : NULL;
    mode = sm ? PyObject_GetAttrString(sm, "TRY_NATIVE") : NULL;
    Py_XDECREF(sm);
    Py_XDECREF(constants);
    PyObject *maxsize = PyLong_FromLong(STREAM_MAX_SIZE);
    if (mode == NULL || maxsize == NULL ||
        PyObject_SetAttrString((PyObject *)st->StreamType,
                               "_sendfile_compatible", mode) < 0 ||
        PyObject_SetAttrString((PyObject *)st->StreamType,
                               "_start_tls_compatible", Py_True) < 0 ||
        PyObject_SetAttrString((PyObject *)st->StreamType, "max_size",
                               maxsize) < 0 ||
        PyModule_AddObjectRef(module, "StreamTransport",
                              (PyObject *)st->StreamType) < 0) {
        Py_XDECREF(mode);
        Py_XDECREF(maxsize);
        goto done;
    }
    Py_DECREF(mode);
    Py_DECREF(maxsize);
    rc = 0;
done:
    Py_XDECREF(base);
    Py_XDECREF(bt);
    return rc;
}
