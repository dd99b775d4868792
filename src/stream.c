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
 *     copied from a per-loop 256 KiB scratch buffer into the loop's spare
 *     bytes object when the last protocol kept no reference to it
 *     (spare.c), else into a new one; or, once a read has brought
 *     ALOOP_DIRECT_READ bytes or more, received straight into a bytes
 *     object sized by FIONREAD (no copy of large reads); BufferedProtocol
 *     gets get_buffer(-1)/recv_into/buffer_updated(n); protocol methods
 *     are looked up once per set_protocol();
 *   - write() sends at once when nothing is buffered; the rest is queued
 *     as bytes chunks and flushed with sendmsg() on writability; flow
 *     control is _FlowControlMixin's (high/low water marks);
 *   - writes made inside the transport's own data_received/buffer_updated
 *     are held (write_held) and sent with one sendmsg() when it returns,
 *     so a reply written in pieces costs one system call.  Held bytes
 *     never exceed the high-water mark, and anything that could observe
 *     the difference (close, abort, write_eof, get_write_buffer_size,
 *     set_write_buffer_limits, sendfile's empty waiter) sends them first;
 *   - connection_lost is called exactly once, via the ready queue, then
 *     the socket is closed.
 * Invariants: `fd` is registered with a reader iff the transport is
 * reading (connection_made has run; not paused, closing or lost) and with
 * a writer iff the buffer is non-empty, not held and not lost.  The fd
 * table holds a reference to the transport for each registered watcher; a
 * readiness event queued for a watcher removed since does not run
 * (transport.c), as a cancelled Handle would not.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

#define STREAM_IOV_MAX 1024

typedef struct {
    PyObject *obj; /* bytes, owned */
    Py_ssize_t off;
} stream_chunk;

typedef struct {
    ALOOP_TRANSPORT_HEAD
    /* protocol methods, looked up by set_protocol() */
    PyObject *data_received;
    PyObject *get_buffer;
    PyObject *buffer_updated;
    /* write buffer: chunks[head .. head+nchunks) */
    stream_chunk *chunks;
    size_t head, nchunks, cap;
    Py_ssize_t last_read; /* bytes the last data_received read brought */
    bool buffered;        /* protocol is a BufferedProtocol */
    bool corking;         /* in data_received/buffer_updated: hold writes */
} StreamObj;

#define T(t) ((TransportObj *)(t))

static void
stream_buffer_clear(TransportObj *tr)
{
    StreamObj *t = (StreamObj *)tr;
    stream_chunk *chunks = t->chunks;
    size_t head = t->head, n = t->nchunks;
    t->chunks = NULL;
    t->head = t->nchunks = t->cap = 0;
    t->buffer_size = 0;
    t->write_held = false;
    for (size_t i = 0; i < n; i++) {
        Py_DECREF(chunks[head + i].obj);
    }
    PyMem_Free(chunks);
}

/* Append buf[:len] (a slice of `data` if that is bytes, else copied). */
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
    if (t->loop->debug &&
        aloop_log(((aloop_state *)PyType_GetModuleState(Py_TYPE(t)))
                      ->selector_events,
                  "debug", "%r received EOF", (PyObject *)t) < 0) {
        return -1;
    }
    aloop_state *st = t->loop->state;
    PyObject *r = PyObject_CallMethodNoArgs(t->protocol, st->str_eof_received);
    if (r == NULL) {
        return aloop_transport_fatal_current(
            T(t), "Fatal error: protocol.eof_received() call failed.");
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return aloop_transport_fatal_current(
            T(t), "Fatal error: protocol.eof_received() call failed.");
    }
    if (keep_open) {
        return aloop_transport_watch(T(t), ALOOP_READ, false);
    }
    PyObject *c = PyObject_CallMethodNoArgs((PyObject *)t, st->str_close);
    Py_XDECREF(c);
    return c ? 0 : -1;
}

static int
stream_flush_held(TransportObj *tr);

/* A protocol callback run with writes held returned `r` (NULL: it raised);
 * send what it wrote.  On error the fatal path (force_close) sends the held
 * writes first, as the stdlib had sent them before the exception. */
static int
stream_callback_done(StreamObj *t, PyObject *r, bool was_corking,
                     const char *message)
{
    t->corking = was_corking;
    if (r == NULL) {
        return aloop_transport_fatal_current(T(t), message);
    }
    Py_DECREF(r);
    return was_corking ? 0 : stream_flush_held(T(t));
}

/* recv_into() the protocol's buffer: 1 with *n received (0 at EOF), 0
 * when there is nothing to deliver (EAGAIN, or a fatal read error, already
 * reported), -1 with an exception. */
static int
stream_recv_into(StreamObj *t, PyObject *buf, Py_ssize_t *n)
{
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        /* sock.recv_into() refuses it (read-only, not a buffer): its own
         * error, a read error as in the stdlib */
        PyErr_Clear();
        PyObject *r = PyObject_CallMethod(t->sock, "recv_into", "(O)", buf);
        *n = r ? PyLong_AsSsize_t(r) : -1;
        Py_XDECREF(r);
        if (*n >= 0) {
            return 1;
        }
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
            PyErr_ExceptionMatches(PyExc_InterruptedError)) {
            PyErr_Clear();
            return 0;
        }
        return aloop_transport_fatal_current(
            T(t), "Fatal read error on socket transport");
    }
    ssize_t got;
    do {
        got = recv(t->fd, view.buf, (size_t)view.len, 0);
    } while (got < 0 && errno == EINTR);
    int err = errno;
    PyBuffer_Release(&view);
    *n = got;
    if (got >= 0) {
        return 1;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
        return 0;
    }
    return aloop_transport_fatal_errno(T(t), err,
                                       "Fatal read error on socket transport");
}

static int
stream_read_buffered(StreamObj *t)
{
    PyObject *arg = PyLong_FromLong(-1);
    PyObject *buf = arg ? PyObject_CallOneArg(t->get_buffer, arg) : NULL;
    Py_XDECREF(arg);
    Py_ssize_t len = buf ? PyObject_Length(buf) : -1;
    if (len == 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "get_buffer() returned an empty buffer");
    }
    if (len <= 0) {
        Py_XDECREF(buf);
        return aloop_transport_fatal_current(
            T(t), "Fatal error: protocol.get_buffer() call failed.");
    }
    Py_ssize_t n;
    int rc = stream_recv_into(t, buf, &n);
    Py_DECREF(buf);
    if (rc <= 0) {
        return rc;
    }
    if (n == 0) {
        return stream_on_eof(t);
    }
    PyObject *nobj = PyLong_FromSsize_t(n);
    bool was_corking = t->corking;
    t->corking = true;
    PyObject *r = nobj ? PyObject_CallOneArg(t->buffer_updated, nobj) : NULL;
    Py_XDECREF(nobj);
    return stream_callback_done(t, r, was_corking,
                                "Fatal error: protocol.buffer_updated() "
                                "call failed.");
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
    /* What recv(max_size) would bring, directly into `data` when it is
     * large; else into the scratch buffer. */
    Py_ssize_t limit = t->max_size;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return aloop_transport_fatal_current(
            T(t), "Fatal read error on socket transport");
    }
    PyObject *data = NULL;
    char *buf;
    Py_ssize_t want = aloop_direct_read_size(t->fd, t->last_read, limit);
    if (want > 0) {
        if ((data = PyBytes_FromStringAndSize(NULL, want)) == NULL) {
            return -1;
        }
        buf = PyBytes_AS_STRING(data);
    } else if ((buf = aloop_loop_read_buf(loop)) != NULL) {
        want = limit < ALOOP_READ_BUF_SIZE ? limit : ALOOP_READ_BUF_SIZE;
    } else {
        return aloop_transport_fatal_current(
            T(t), "Fatal read error on socket transport");
    }
    ssize_t n;
    do {
        n = recv(t->fd, buf, (size_t)want, 0);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    t->last_read = n;
    if (n <= 0) {
        Py_XDECREF(data);
        if (n == 0) {
            return stream_on_eof(t);
        }
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        return aloop_transport_fatal_errno(
            T(t), err, "Fatal read error on socket transport");
    }
    if (data == NULL) {
        data = aloop_spare_bytes(loop, buf, n);
    } else if (n < want) {
        (void)_PyBytes_Resize(&data, n);
    }
    if (data == NULL) {
        return -1;
    }
    bool was_corking = t->corking;
    t->corking = true;
    /* No data_received when the protocol was set: look it up now, as the
     * stdlib does per read, and fail with its AttributeError if absent. */
    PyObject *r =
        t->data_received
            ? PyObject_CallOneArg(t->data_received, data)
            : PyObject_CallMethod(t->protocol, "data_received", "(O)", data);
    /* after the held writes went out: they may hold `data` */
    int rc = stream_callback_done(
        t, r, was_corking,
        "Fatal error: protocol.data_received() call failed.");
    aloop_spare_release(loop, data);
    return rc;
}

/* -------------------------------------------------------------- writing */

/* Flush what the socket takes; 0 or -1 (exception set). */
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
        /* One chunk (the usual case): send() costs the kernel less than a
         * one-entry sendmsg(), 30-50 ns of 1 KiB echo's ~4 us. */
        sent = n == 1
                   ? send(t->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                   : sendmsg(t->fd, &msg, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        int err = errno;
        if (aloop_transport_watch(T(t), ALOOP_WRITE, false) < 0) {
            return -1;
        }
        stream_buffer_clear(T(t));
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        if (aloop_error_is_fatal()) {
            return -1;
        }
        PyObject *exc = aloop_fetch_exception();
        int rc = aloop_transport_fatal_error(
            T(t), exc, "Fatal write error on socket transport");
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
    /* resume_writing() may append to the buffer */
    if (aloop_transport_maybe_resume(T(t)) < 0) {
        return -1;
    }
    if (t->nchunks) {
        return 0;
    }
    if (aloop_transport_watch(T(t), ALOOP_WRITE, false) < 0) {
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
        PyObject *r = aloop_transport_call_connection_lost(T(t), Py_None);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    if (t->eof) {
        return stream_shutdown_write(t);
    }
    return 0;
}

/* Send the buffer now and wait for writability for what remains. */
static int
stream_send_buffer(StreamObj *t)
{
    if (stream_write_ready(t->loop, (PyObject *)t, ALOOP_WRITE) < 0) {
        return -1;
    }
    if (t->nchunks && !t->conn_lost &&
        aloop_transport_watch(T(t), ALOOP_WRITE, true) < 0) {
        return -1;
    }
    return 0;
}

static int
stream_flush_held(TransportObj *tr)
{
    StreamObj *t = (StreamObj *)tr;
    if (!t->write_held) {
        return 0;
    }
    t->write_held = false;
    if (stream_send_buffer(t) < 0) {
        return -1;
    }
    return aloop_transport_maybe_pause(tr);
}

/* Data went into a buffer that held nothing already tried: hold it while
 * corking (up to the high-water mark), else send it now. */
static int
stream_buffer_started(StreamObj *t)
{
    if (t->corking) {
        t->write_held = true;
        return t->buffer_size > t->high_water ? stream_flush_held(T(t)) : 0;
    }
    if (stream_send_buffer(t) < 0) {
        return -1;
    }
    return aloop_transport_maybe_pause(T(t));
}

/* write(data): 0, or -1 with an exception for the caller. */
static int
stream_write(StreamObj *t, PyObject *data)
{
    Py_buffer view;
    const char *buf = NULL;
    Py_ssize_t len;
    bool have_view = false;
    PyObject *unsendable = NULL; /* a non-contiguous memoryview's error */
    if (PyBytes_CheckExact(data)) {
        buf = PyBytes_AS_STRING(data);
        len = PyBytes_GET_SIZE(data);
    } else if (PyBytes_Check(data) || PyByteArray_Check(data) ||
               PyMemoryView_Check(data)) {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            if (!PyMemoryView_Check(data) ||
                !PyErr_ExceptionMatches(PyExc_BufferError)) {
                return -1;
            }
            /* accepted, then sock.send() fails: a fatal write error */
            unsendable = aloop_fetch_exception();
            len = 0; /* len(data), once the checks before it passed */
        } else {
            have_view = true;
            buf = view.buf;
            len = view.len;
        }
    } else {
        aloop_type_error_not_bytes(data);
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
    if (unsendable != NULL && (len = PyObject_Length(data)) < 0) {
        rc = -1;
        goto done;
    }
    if (len == 0) {
        goto done;
    }
    if (t->conn_lost) {
        rc = aloop_transport_lost_writes(T(t));
        goto done;
    }
    if (unsendable != NULL) {
        rc = aloop_transport_fatal_error(T(t), unsendable,
                                         "Fatal write error on socket "
                                         "transport");
        goto done;
    }
    bool untried = t->nchunks == 0 || t->write_held;
    if (t->nchunks == 0 && !t->corking) {
        ssize_t n;
        do {
            n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                rc = aloop_transport_fatal_errno(
                    T(t), errno, "Fatal write error on socket transport");
                goto done;
            }
            n = 0;
        }
        if (n == len) {
            goto done;
        }
        buf += n;
        len -= n;
        if (aloop_transport_watch(T(t), ALOOP_WRITE, true) < 0) {
            rc = -1;
            goto done;
        }
    }
    if (stream_buffer_append(t, have_view ? NULL : data, buf, len) < 0) {
        rc = -1;
        goto done;
    }
    rc = untried && t->corking ? stream_buffer_started(t)
                               : aloop_transport_maybe_pause(T(t));
done:
    if (have_view) {
        PyBuffer_Release(&view);
    }
    Py_XDECREF(unsendable);
    return rc;
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

/* writelines() checks, with the running version's messages: 3.12 has its
 * own method; 3.11's is WriteTransport's b''.join() and write(). */
static PyObject *
stream_writelines_items(StreamObj *t, PyObject *list_of_data)
{
#if PY_VERSION_HEX >= 0x030C0000
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
    int truth = PyObject_IsTrue(list_of_data); /* `if not list_of_data` */
    if (truth <= 0) {
        return truth < 0 ? NULL : PyTuple_New(0);
    }
    PyObject *seq =
        PyList_CheckExact(list_of_data) || PyTuple_CheckExact(list_of_data)
            ? Py_NewRef(list_of_data)
            : PySequence_List(list_of_data);
#else
    PyObject *seq = PySequence_Fast(list_of_data, "can only join an iterable");
#endif
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyBytes_CheckExact(items[i])) {
            continue;
        }
        if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) == 0) {
            PyBuffer_Release(&view);
            continue;
        }
#if PY_VERSION_HEX >= 0x030C0000
        /* memoryview(data)'s own error */
        PyErr_Clear();
        PyObject *mv = PyMemoryView_FromObject(items[i]);
        Py_XDECREF(mv);
        if (mv != NULL) {
            PyErr_SetString(PyExc_BufferError,
                            "writelines() needs contiguous buffers");
        }
#else
        PyErr_Format(PyExc_TypeError,
                     "sequence item %zd: expected a bytes-like object, "
                     "%.80s found",
                     i, Py_TYPE(items[i])->tp_name);
#endif
        Py_DECREF(seq);
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    const char *msg = t->eof ? "Cannot call write() after write_eof()"
                      : t->empty_waiter != NULL
                          ? "unable to write; sendfile is in progress"
                          : NULL;
    if (msg != NULL) {
        PyErr_SetString(PyExc_RuntimeError, msg);
        Py_DECREF(seq);
        return NULL;
    }
#endif
    return seq;
}

/* All or nothing, as the stdlib's: every item is checked first, then they
 * go out in one gathered sendmsg(). */
static PyObject *
StreamObj_writelines(StreamObj *t, PyObject *list_of_data)
{
    PyObject *seq = stream_writelines_items(t, list_of_data);
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int rc = 0;
    if (t->conn_lost || t->loop == NULL) {
        /* like one write() of them all: counted and warned about once */
        Py_ssize_t nonempty = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            nonempty += PyObject_Length(items[i]) > 0;
        }
        Py_DECREF(seq);
        if (nonempty) {
            rc = aloop_transport_lost_writes(T(t));
        }
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    bool untried = t->nchunks == 0 || t->write_held;
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
    rc = t->nchunks && untried ? stream_buffer_started(t)
                               : aloop_transport_maybe_pause(T(t));
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
StreamObj_write_eof(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof) {
        Py_RETURN_NONE;
    }
    if (stream_flush_held(T(t)) < 0) {
        return NULL;
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

/* Look up the protocol's methods once per set_protocol(). */
static int
stream_set_protocol(TransportObj *tr, PyObject *protocol)
{
    StreamObj *t = (StreamObj *)tr;
    aloop_state *st = (aloop_state *)PyType_GetModuleState(Py_TYPE(t));
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
        /* A protocol without data_received fails on its first read, as in
         * the stdlib; it is not refused here. */
        dr = PyObject_GetAttrString(protocol, "data_received");
        if (dr == NULL) {
            PyErr_Clear();
        }
    }
    Py_XSETREF(t->data_received, dr);
    Py_XSETREF(t->get_buffer, gb);
    Py_XSETREF(t->buffer_updated, bu);
    t->buffered = buffered;
    return 0;
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
    if (stream_flush_held(T(t)) < 0) {
        return NULL;
    }
    PyObject *fut = PyObject_CallMethodNoArgs(
        (PyObject *)t->loop, t->loop->state->str_create_future);
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
StreamObj_get_buffer_snapshot(StreamObj *t, void *c)
{
    /* _buffer: the pending chunks, as a list of memoryviews (truthy iff
     * data is buffered, like the stdlib's deque). */
    if (stream_flush_held(T(t)) < 0) {
        return NULL;
    }
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

static PyObject *
StreamObj_get_empty_waiter(StreamObj *t, void *c)
{
    return Py_NewRef(t->empty_waiter ? t->empty_waiter : Py_None);
}

static PyObject *
StreamObj_get_eof(StreamObj *t, void *c)
{
    return PyBool_FromLong(t->eof);
}

static PyGetSetDef StreamObj_getset[] = {
    {"_empty_waiter", (getter)StreamObj_get_empty_waiter, NULL, NULL, NULL},
    {"_buffer", (getter)StreamObj_get_buffer_snapshot, NULL, NULL, NULL},
    {"_eof", (getter)StreamObj_get_eof, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define NOARGS(name) {#name, (PyCFunction)StreamObj_##name, METH_NOARGS, NULL}

static PyMethodDef StreamObj_methods[] = {
    {"write", (PyCFunction)StreamObj_write, METH_O, NULL},
    {"writelines", (PyCFunction)StreamObj_writelines, METH_O, NULL},
    NOARGS(write_eof),
    NOARGS(can_write_eof),
    NOARGS(_make_empty_waiter),
    NOARGS(_reset_empty_waiter),
    {NULL, NULL, 0, NULL},
};

static void
stream_clear_protocol(TransportObj *tr)
{
    StreamObj *t = (StreamObj *)tr;
    Py_CLEAR(t->data_received);
    Py_CLEAR(t->get_buffer);
    Py_CLEAR(t->buffer_updated);
}

static int
stream_traverse(TransportObj *tr, visitproc visit, void *arg)
{
    StreamObj *t = (StreamObj *)tr;
    Py_VISIT(t->data_received);
    Py_VISIT(t->get_buffer);
    Py_VISIT(t->buffer_updated);
    for (size_t i = 0; i < t->nchunks; i++) {
        Py_VISIT(t->chunks[t->head + i].obj);
    }
    return 0;
}

static int
stream_set_protocol(TransportObj *tr, PyObject *protocol);

static const aloop_transport_ops stream_ops = {
    .read_ready = stream_read_ready,
    .write_ready = stream_write_ready,
    .write_ready_name = "_write_ready",
    .clear_buffer = stream_buffer_clear,
    .set_protocol = stream_set_protocol,
    .clear_protocol = stream_clear_protocol,
    .traverse = stream_traverse,
    .flush_held = stream_flush_held,
};

/* Not immutable: asyncio.Transport is a mutable base (see handle.c). */
static PyType_Spec stream_spec = {
    .name = "aloop._core.StreamTransport",
    .basicsize = sizeof(StreamObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
};

/* Read one of _socket.socket's int members (family, type, proto). */
static int
stream_sock_int(PyObject *descr, PyObject *sock, int *out)
{
    PyObject *v = Py_TYPE(descr)->tp_descr_get(descr, sock, NULL);
    if (v == NULL) {
        return -1;
    }
    long l = PyLong_AsLong(v);
    Py_DECREF(v);
    *out = (int)l;
    return l == -1 && PyErr_Occurred() ? -1 : 0;
}

/* base_events._set_nodelay(sock): TCP_NODELAY on an AF_INET/AF_INET6,
 * SOCK_STREAM, IPPROTO_TCP socket.  Done here for a socket.socket, where
 * the stdlib's Python and enum conversions cost more than the system
 * call; anything else goes to the stdlib's function. */
static int
stream_set_nodelay(aloop_state *st, PyObject *sock, int fd)
{
    if (!Py_IS_TYPE(sock, (PyTypeObject *)st->socket_type)) {
        PyObject *r = PyObject_CallOneArg(st->set_nodelay, sock);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    int family, type, proto;
    if (stream_sock_int(st->sock_family, sock, &family) < 0 ||
        stream_sock_int(st->sock_type, sock, &type) < 0 ||
        stream_sock_int(st->sock_proto, sock, &proto) < 0) {
        return -1;
    }
    if ((family != AF_INET && family != AF_INET6) || type != SOCK_STREAM ||
        proto != IPPROTO_TCP) {
        return 0;
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* What _SelectorSocketTransport reads and writes through. */
static const char *const stream_sock_methods[] = {"recv", "recv_into", "send",
                                                  "sendmsg", NULL};

/* _SelectorSocketTransport(loop, sock, protocol, waiter, extra, server):
 * this C transport, or the stdlib's for a socket that overrides its
 * I/O methods. */
PyObject *
aloop_stream_new(LoopObj *loop, PyObject *sock, PyObject *protocol,
                 PyObject *waiter, PyObject *extra, PyObject *server)
{
    int own = aloop_sock_overrides(loop->state, sock, stream_sock_methods);
    if (own != 0) {
        PyObject *args[] = {(PyObject *)loop, sock,  protocol,
                            waiter,           extra, server};
        return own < 0 ? NULL
                       : aloop_stdlib_call(loop->state, NULL,
                                           "_SelectorSocketTransport", args, 6,
                                           NULL);
    }
    StreamObj *t = PyObject_GC_New(StreamObj, loop->state->StreamType);
    if (t == NULL) {
        return NULL;
    }
    memset((char *)t + sizeof(PyObject), 0,
           sizeof(StreamObj) - sizeof(PyObject));
    PyObject_GC_Track(t);
    if (aloop_transport_init(T(t), &stream_ops, loop, sock, protocol, waiter,
                             extra, server) < 0) {
        goto error;
    }
    if (stream_set_nodelay(loop->state, sock, t->fd) < 0) {
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
    st->StreamType = aloop_transport_make_type(
        module, &stream_spec, NULL, StreamObj_methods, StreamObj_getset);
    if (st->StreamType == NULL) {
        return -1;
    }
    PyObject *constants = PyImport_ImportModule("asyncio.constants");
    PyObject *sm =
        constants ? PyObject_GetAttrString(constants, "_SendfileMode") : NULL;
    PyObject *mode = sm ? PyObject_GetAttrString(sm, "TRY_NATIVE") : NULL;
    Py_XDECREF(sm);
    Py_XDECREF(constants);
    PyObject *tp = (PyObject *)st->StreamType;
    int rc = (mode == NULL ||
              PyObject_SetAttrString(tp, "_sendfile_compatible", mode) < 0 ||
              PyObject_SetAttrString(tp, "_start_tls_compatible", Py_True) < 0)
                 ? -1
                 : PyModule_AddObjectRef(module, "StreamTransport", tp);
    Py_XDECREF(mode);
    return rc;
}
