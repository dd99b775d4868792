/* sockops.c -- loop.sock_recv & co: the socket operations in C.
 *
 * Each call returns a SockOp: a lazy, coroutine-like object (registered as
 * collections.abc.Coroutine, so create_task/ensure_future accept it, with
 * am_send for the Task's fast path).  Nothing happens until the first
 * send(), where the stdlib's checks run in its order (SSL socket, debug
 * non-blocking check), then the system call is tried at once: on success
 * the result is returned without a Future or the poller.  On EAGAIN the
 * fd must not belong to a live transport; the op then registers itself as
 * the fd's internal reader or writer, yields a Future, and retries the
 * call when the fd is ready.  The watcher is oneshot: the poller disarms
 * it after one event and keeps the fd, so a wait costs one epoll_ctl
 * instead of an add and a remove.  It is removed as soon as the op
 * completes, and on throw()/close()/dealloc, which is how cancellation
 * reaches it, so no data is consumed by a cancelled op.  A second op on
 * the same fd replaces the first one's watcher, as _add_reader does in
 * the stdlib (the first then waits until cancelled).
 *
 * Plain socket.socket objects use recv/recv_into/send on the fd directly;
 * anything else (and every address-carrying call) goes through the
 * socket's own methods, so subclasses and address parsing behave as in
 * the stdlib.
 */
#include <errno.h>
#include <sys/socket.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

typedef enum {
    OP_RECV,
    OP_RECV_INTO,
    OP_RECVFROM,
    OP_RECVFROM_INTO,
    OP_SENDALL,
    OP_SENDTO,
    OP_ACCEPT,
    OP_CONNECT,
} sockop_kind;

typedef enum {
    OP_INIT,    /* not started: the first send() runs the op */
    OP_WAITING, /* watcher registered, future yielded */
    OP_DONE,
} sockop_state;

typedef struct {
    PyObject_HEAD LoopObj *loop;
    PyObject *sock;
    PyObject *arg1;     /* n / buf / data / address, per kind */
    PyObject *arg2;     /* recvfrom_into nbytes, sendto address */
    PyObject *fut;      /* while waiting */
    PyObject *delegate; /* sock_connect needing DNS: the stdlib coroutine */
    Py_buffer view;     /* sendall: the data being sent */
    Py_ssize_t pos;     /* sendall: bytes sent so far */
    int fd;             /* registered fd while waiting, else -1 */
    sockop_kind kind;
    sockop_state state;
} SockOpObj;

static const char *const sockop_names[] = {
    "sock_recv",    "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
    "sock_sendall", "sock_sendto",    "sock_accept",   "sock_connect",
};

static bool
sockop_is_write(sockop_kind k)
{
    return k == OP_SENDALL || k == OP_SENDTO || k == OP_CONNECT;
}

static bool
sockop_would_block(void)
{
    return PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
           PyErr_ExceptionMatches(PyExc_InterruptedError);
}

/* --------------------------------------------------------- the syscalls */

/* Each try function returns 1 with *result set, 0 if it would block, or -1
 * with an exception set. */

static int
sockop_fast_socket(SockOpObj *op)
{
    return Py_IS_TYPE(op->sock, (PyTypeObject *)op->loop->state->socket_type);
}

static int
sockop_fileno(SockOpObj *op)
{
    PyObject *r =
        PyObject_CallMethodNoArgs(op->sock, op->loop->state->str_fileno);
    if (r == NULL) {
        return -2;
    }
    long fd = PyLong_AsLong(r);
    Py_DECREF(r);
    if (fd == -1 && PyErr_Occurred()) {
        return -2;
    }
    return (int)fd;
}

/* sock.name(*args): 1 with the result, 0 if it would block, -1. */
static int
sockop_call(PyObject **result, PyObject *sock, const char *name, PyObject *arg)
{
    PyObject *r = PyObject_CallMethod(sock, name, "(O)", arg);
    if (r == NULL) {
        return sockop_would_block() ? (PyErr_Clear(), 0) : -1;
    }
    *result = r;
    return 1;
}

static int
sockop_try_recv(SockOpObj *op, PyObject **result)
{
    /* n as anything but an int (an __index__ object, a wrong type) is
     * the socket's to convert or refuse */
    if (!sockop_fast_socket(op) || !PyLong_CheckExact(op->arg1)) {
        return sockop_call(result, op->sock, "recv", op->arg1);
    }
    Py_ssize_t n = PyLong_AsSsize_t(op->arg1);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recv");
        return -1;
    }
    int fd = sockop_fileno(op);
    if (fd == -2) {
        return -1;
    }
    /* Up to the loop's scratch size, receive there and copy what came:
     * allocating n bytes and shrinking them (socket.recv's way) makes
     * malloc hand out fresh pages, and page faults, for large n.  After a
     * large receive, a large queue goes straight into its bytes object. */
    LoopObj *loop = op->loop;
    Py_ssize_t direct = aloop_direct_read_size(fd, loop->sock_recv_last, n);
    Py_ssize_t want = direct ? direct : n;
    bool scratch = direct == 0 && n <= ALOOP_READ_BUF_SIZE;
    PyObject *bytes = NULL;
    char *buf;
    if (scratch) {
        buf = aloop_loop_read_buf(loop);
    } else {
        bytes = PyBytes_FromStringAndSize(NULL, want);
        buf = bytes ? PyBytes_AS_STRING(bytes) : NULL;
    }
    if (buf == NULL) {
        return -1;
    }
    ssize_t got;
    do {
        got = recv(fd, buf, (size_t)want, 0);
    } while (got < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    if (got < 0) {
        Py_XDECREF(bytes);
        if (PyErr_Occurred()) {
            return -1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    loop->sock_recv_last = got;
    if (scratch) {
        bytes = PyBytes_FromStringAndSize(buf, got);
    } else if (got != want && _PyBytes_Resize(&bytes, got) < 0) {
        return -1;
    }
    *result = bytes;
    return bytes ? 1 : -1;
}

static int
sockop_try_recv_into(SockOpObj *op, PyObject **result)
{
    Py_buffer buf;
    if (!sockop_fast_socket(op)) {
        return sockop_call(result, op->sock, "recv_into", op->arg1);
    }
    if (PyObject_GetBuffer(op->arg1, &buf, PyBUF_WRITABLE) < 0) {
        /* read-only, not a buffer: recv_into's own TypeError */
        PyErr_Clear();
        return sockop_call(result, op->sock, "recv_into", op->arg1);
    }
    int fd = sockop_fileno(op);
    if (fd == -2) {
        PyBuffer_Release(&buf);
        return -1;
    }
    ssize_t got;
    do {
        got = recv(fd, buf.buf, (size_t)buf.len, 0);
    } while (got < 0 && errno == EINTR && PyErr_CheckSignals() == 0);
    int saved = errno;
    PyBuffer_Release(&buf);
    if (got < 0) {
        if (PyErr_Occurred()) {
            return -1;
        }
        if (saved == EAGAIN || saved == EWOULDBLOCK) {
            return 0;
        }
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *result = PyLong_FromSsize_t(got);
    return *result ? 1 : -1;
}

/* Send from op->view starting at op->pos until done or EAGAIN: at least
 * once, even empty data, as the stdlib's first sock.send(data) reports a
 * closed or broken socket. */
static int
sockop_try_sendall(SockOpObj *op, PyObject **result)
{
    if (!sockop_fast_socket(op)) {
        do {
            PyObject *mv =
                PyMemoryView_FromMemory((char *)op->view.buf + op->pos,
                                        op->view.len - op->pos, PyBUF_READ);
            PyObject *r =
                mv ? PyObject_CallMethod(op->sock, "send", "(O)", mv) : NULL;
            Py_XDECREF(mv);
            if (r == NULL) {
                return sockop_would_block() ? (PyErr_Clear(), 0) : -1;
            }
            Py_ssize_t n = PyLong_AsSsize_t(r);
            Py_DECREF(r);
            if (n == -1 && PyErr_Occurred()) {
                return -1;
            }
            op->pos += n;
        } while (op->pos < op->view.len);
        *result = Py_NewRef(Py_None);
        return 1;
    }
    int fd = sockop_fileno(op);
    if (fd == -2) {
        return -1;
    }
    for (;;) {
        ssize_t n = send(fd, (char *)op->view.buf + op->pos,
                         (size_t)(op->view.len - op->pos), MSG_NOSIGNAL);
        if (n >= 0) {
            op->pos += n;
            if (op->pos >= op->view.len) {
                break;
            }
            continue;
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                return -1;
            }
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *result = Py_NewRef(Py_None);
    return 1;
}

/* Calls through the socket's own methods (addresses, new sockets). */
static int
sockop_try_method(SockOpObj *op, PyObject **result, bool retry)
{
    PyObject *r;
    switch (op->kind) {
    case OP_RECVFROM:
        r = PyObject_CallMethod(op->sock, "recvfrom", "(O)", op->arg1);
        break;
    case OP_RECVFROM_INTO:
        r = PyObject_CallMethod(op->sock, "recvfrom_into", "OO", op->arg1,
                                op->arg2);
        break;
    case OP_SENDTO:
        /* The first try is sendto(data, address); retries pass flags. */
        r = retry ? PyObject_CallMethod(op->sock, "sendto", "OiO", op->arg1, 0,
                                        op->arg2)
                  : PyObject_CallMethod(op->sock, "sendto", "OO", op->arg1,
                                        op->arg2);
        break;
    case OP_ACCEPT:
        r = PyObject_CallMethod(op->sock, "accept", NULL);
        if (r != NULL) {
            PyObject *s = PyObject_CallMethod(PyTuple_GET_ITEM(r, 0),
                                              "setblocking", "(O)", Py_False);
            if (s == NULL) {
                Py_CLEAR(r);
            }
            Py_XDECREF(s);
        }
        break;
    default:
        PyErr_SetString(PyExc_SystemError, "aloop: bad sock op");
        return -1;
    }
    if (r == NULL) {
        return sockop_would_block() ? (PyErr_Clear(), 0) : -1;
    }
    *result = r;
    return 1;
}

/* sock_connect: connect() once, then SO_ERROR when writable. */
static int
sockop_try_connect(SockOpObj *op, PyObject **result, bool retry)
{
    if (!retry) {
        PyObject *r =
            PyObject_CallMethod(op->sock, "connect", "(O)", op->arg1);
        if (r == NULL) {
            return sockop_would_block() ? (PyErr_Clear(), 0) : -1;
        }
        *result = r; /* None */
        return 1;
    }
    PyObject *r = PyObject_CallMethod(op->sock, "getsockopt", "ii", SOL_SOCKET,
                                      SO_ERROR);
    if (r == NULL) {
        return sockop_would_block() ? (PyErr_Clear(), 0) : -1;
    }
    long err = PyLong_AsLong(r);
    Py_DECREF(r);
    if (err == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (err != 0) {
        PyObject *msg =
            PyUnicode_FromFormat("Connect call failed %R", op->arg1);
        if (msg != NULL) {
            PyObject *exc =
                PyObject_CallFunction(PyExc_OSError, "lO", err, msg);
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
            Py_DECREF(msg);
        }
        return -1;
    }
    *result = Py_NewRef(Py_None);
    return 1;
}

static int
sockop_try(SockOpObj *op, PyObject **result, bool retry)
{
    switch (op->kind) {
    case OP_RECV:
        return sockop_try_recv(op, result);
    case OP_RECV_INTO:
        return sockop_try_recv_into(op, result);
    case OP_SENDALL:
        return sockop_try_sendall(op, result);
    case OP_CONNECT:
        return sockop_try_connect(op, result, retry);
    default:
        return sockop_try_method(op, result, retry);
    }
}

/* ------------------------------------------------------ waiting on the fd */

static void
sockop_unregister(SockOpObj *op)
{
    if (op->fd < 0) {
        return;
    }
    int fd = op->fd;
    op->fd = -1;
    aloop_fdslot *slot = aloop_fdtable_get(&op->loop->fds, fd);
    if (slot == NULL) {
        return;
    }
    uint32_t which = sockop_is_write(op->kind) ? ALOOP_WRITE : ALOOP_READ;
    aloop_watcher *w = which == ALOOP_READ ? &slot->reader : &slot->writer;
    if (w->obj != (PyObject *)op) {
        return; /* replaced by a later operation on the same fd */
    }
    PyObject *old = NULL;
    (void)aloop_loop_set_watcher(op->loop, fd, which, NULL, NULL, &old);
    Py_XDECREF(old); /* a reference to op, which the caller also holds */
}

static int
sockop_call_fut(SockOpObj *op, PyObject *meth, PyObject *arg)
{
    PyObject *r = PyObject_CallMethodOneArg(op->fut, meth, arg);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Internal watcher: the fd is ready for this op. */
static int
sockop_ready(LoopObj *loop, PyObject *owner, uint32_t events)
{
    SockOpObj *op = (SockOpObj *)owner;
    if (op->state != OP_WAITING || op->fut == NULL) {
        sockop_unregister(op);
        return 0;
    }
    PyObject *done = PyObject_CallMethodNoArgs(op->fut, loop->state->str_done);
    int is_done = done ? PyObject_IsTrue(done) : -1;
    Py_XDECREF(done);
    if (is_done != 0) {
        sockop_unregister(op);
        return is_done < 0 ? aloop_loop_report_exception(
                                 loop, "Exception in sock operation")
                           : 0;
    }
    PyObject *result = NULL;
    int rc = sockop_try(op, &result, true);
    if (rc == 0) {
        int err = aloop_loop_rearm(loop, op->fd);
        if (err == 0) {
            return 0; /* spurious wakeup: wait again */
        }
        aloop_errno_error(err);
        rc = -1;
    }
    sockop_unregister(op);
    if (rc > 0) {
        rc = sockop_call_fut(op, loop->state->str_set_result, result);
        Py_DECREF(result);
    } else {
        if (aloop_error_is_fatal()) {
            return -1;
        }
        PyObject *exc = aloop_fetch_exception();
        rc = sockop_call_fut(op, loop->state->str_set_exception, exc);
        Py_DECREF(exc);
    }
    return rc < 0 ? aloop_loop_report_exception(loop,
                                                "Exception in sock operation")
                  : 0;
}

/* EAGAIN on the first try: check the fd, register, make the future. */
static int
sockop_start_waiting(SockOpObj *op)
{
    aloop_state *st = op->loop->state;
    int fd = sockop_fileno(op);
    if (fd == -2) {
        return -1;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %d", fd);
        return -1;
    }
    PyObject *fdobj = PyLong_FromLong(fd);
    if (fdobj == NULL) {
        return -1;
    }
    int rc = aloop_loop_ensure_no_transport(op->loop, fdobj);
    Py_DECREF(fdobj);
    if (rc < 0 || aloop_loop_check_closed(op->loop) < 0) {
        return -1;
    }
    /* self.create_future(), as the stdlib's sock_* methods wait on */
    PyObject *args[1] = {(PyObject *)op->loop};
    rc = aloop_loop_overrides(op->loop, ALOOP_HOOK(ALOOP_HOOK_CREATE_FUTURE));
    op->fut = rc < 0 ? NULL
              : rc == 0
                  ? PyObject_Vectorcall(st->Future, args, 0, st->kwnames_loop)
                  : PyObject_CallMethodNoArgs((PyObject *)op->loop,
                                              st->str_create_future);
    if (op->fut == NULL) {
        return -1;
    }
    uint32_t which = sockop_is_write(op->kind) ? ALOOP_WRITE : ALOOP_READ;
    PyObject *old = NULL;
    rc = aloop_loop_set_oneshot_watcher(op->loop, fd, which, (PyObject *)op,
                                        sockop_ready, &old);
    if (rc < 0) {
        aloop_errno_error(rc);
        return -1;
    }
    op->fd = fd;
    op->state = OP_WAITING;
    if (old != NULL && Py_IS_TYPE(old, st->HandleType)) {
        /* A user reader/writer is replaced, as in the stdlib. */
        rc = aloop_handle_cancel((HandleObj *)old);
    }
    Py_XDECREF(old);
    return rc;
}

/* sock_recvfrom_into: `if not nbytes: nbytes = len(buf)`, as the stdlib's
 * coroutine does when it starts. */
static int
sockop_prepare_recvfrom_into(SockOpObj *op)
{
    int truth = op->arg2 ? PyObject_IsTrue(op->arg2) : 0;
    if (truth != 0) {
        return truth;
    }
    Py_ssize_t len = PyObject_Length(op->arg1);
    PyObject *n = len < 0 ? NULL : PyLong_FromSsize_t(len);
    if (n == NULL) {
        return -1;
    }
    Py_XSETREF(op->arg2, n);
    return 0;
}

/* ---------------------------------------------------------- coroutine API */

static int
sockop_check_socket(SockOpObj *op)
{
    aloop_state *st = op->loop->state;
    if (st->SSLSocket != Py_None) {
        int is_ssl = PyObject_IsInstance(op->sock, st->SSLSocket);
        if (is_ssl < 0) {
            return -1;
        }
        if (is_ssl) {
            PyErr_SetString(PyExc_TypeError,
                            "Socket cannot be of type SSLSocket");
            return -1;
        }
    }
    if (op->loop->debug) {
        PyObject *t = PyObject_CallMethod(op->sock, "gettimeout", NULL);
        if (t == NULL) {
            return -1;
        }
        int blocking = !(PyFloat_Check(t) && PyFloat_AS_DOUBLE(t) == 0.0) &&
                       !(PyLong_Check(t) && PyLong_AsLong(t) == 0);
        Py_DECREF(t);
        if (blocking) {
            PyErr_SetString(PyExc_ValueError,
                            "the socket must be non-blocking");
            return -1;
        }
    }
    return 0;
}

/* sock_connect on AF_INET/AF_INET6 resolves like _ensure_resolved(): a
 * numeric address is used as is; anything else runs the stdlib's coroutine
 * (which may call getaddrinfo in the executor). */
static int
sockop_prepare_connect(SockOpObj *op)
{
    aloop_state *st = op->loop->state;
    PyObject *family = PyObject_GetAttrString(op->sock, "family");
    if (family == NULL) {
        return -1;
    }
    long fam = PyLong_AsLong(family);
    Py_DECREF(family);
    if (fam != AF_INET && fam != AF_INET6) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *info = NULL;
    if (PyTuple_Check(op->arg1) && PyTuple_GET_SIZE(op->arg1) >= 2) {
        PyObject *type = PyObject_GetAttrString(op->sock, "type");
        PyObject *proto = PyObject_GetAttrString(op->sock, "proto");
        if (type == NULL || proto == NULL) {
            Py_XDECREF(type);
            Py_XDECREF(proto);
            return -1;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(op->arg1);
        PyObject *args[8];
        args[0] = PyTuple_GET_ITEM(op->arg1, 0);
        args[1] = PyTuple_GET_ITEM(op->arg1, 1);
        args[2] = PyLong_FromLong(fam);
        args[3] = type;
        args[4] = proto;
        Py_ssize_t nargs = 5;
        for (Py_ssize_t i = 2; i < n && nargs < 8; i++) {
            args[nargs++] = PyTuple_GET_ITEM(op->arg1, i);
        }
        info = args[2]
                   ? PyObject_Vectorcall(st->ipaddr_info, args, nargs, NULL)
                   : NULL;
        Py_XDECREF(args[2]);
        Py_DECREF(type);
        Py_DECREF(proto);
        if (info == NULL) {
            PyErr_Clear(); /* let the stdlib produce its own error */
        }
    }
    if (info != NULL && info != Py_None) {
        Py_SETREF(op->arg1, Py_NewRef(PyTuple_GET_ITEM(info, 4)));
        Py_DECREF(info);
        return 0;
    }
    Py_XDECREF(info);
    PyObject *args[3] = {(PyObject *)op->loop, op->sock, op->arg1};
    op->delegate = PyObject_Vectorcall(st->base_sock_connect, args, 3, NULL);
    return op->delegate ? 0 : -1;
}

static PySendResult
sockop_finish(SockOpObj *op, int rc, PyObject *result, PyObject **presult)
{
    op->state = OP_DONE;
    if (op->kind == OP_SENDALL && op->view.obj != NULL) {
        PyBuffer_Release(&op->view);
    }
    if (rc < 0) {
        *presult = NULL;
        return PYGEN_ERROR;
    }
    *presult = result;
    return PYGEN_RETURN;
}

static PySendResult
SockOpObj_am_send(SockOpObj *op, PyObject *arg, PyObject **presult)
{
    if (op->delegate != NULL) {
        PySendResult r = PyIter_Send(op->delegate, arg, presult);
        if (r != PYGEN_NEXT) {
            op->state = OP_DONE;
            Py_CLEAR(op->delegate);
        }
        return r;
    }
    PyObject *result = NULL;
    int rc;
    switch (op->state) {
    case OP_INIT:
        if (sockop_check_socket(op) < 0) {
            return sockop_finish(op, -1, NULL, presult);
        }
        if (op->kind == OP_CONNECT) {
            if (sockop_prepare_connect(op) < 0) {
                return sockop_finish(op, -1, NULL, presult);
            }
            if (op->delegate != NULL) {
                return SockOpObj_am_send(op, Py_None, presult);
            }
        }
        if (op->kind == OP_SENDALL &&
            PyObject_GetBuffer(op->arg1, &op->view, PyBUF_SIMPLE) < 0) {
            return sockop_finish(op, -1, NULL, presult);
        }
        if (op->kind == OP_RECVFROM_INTO &&
            sockop_prepare_recvfrom_into(op) < 0) {
            return sockop_finish(op, -1, NULL, presult);
        }
        rc = sockop_try(op, &result, false);
        if (rc != 0) {
            return sockop_finish(op, rc, result, presult);
        }
        if (sockop_start_waiting(op) < 0) {
            sockop_unregister(op);
            return sockop_finish(op, -1, NULL, presult);
        }
        /* Yield the future to the Task, as Future.__await__ does. */
        if (PyObject_SetAttr(op->fut, op->loop->state->str_future_blocking,
                             Py_True) < 0) {
            sockop_unregister(op);
            return sockop_finish(op, -1, NULL, presult);
        }
        *presult = Py_NewRef(op->fut);
        return PYGEN_NEXT;
    case OP_WAITING: {
        sockop_unregister(op);
        PyObject *fut = op->fut;
        op->fut = NULL;
        result = PyObject_CallMethodNoArgs(fut, op->loop->state->str_result);
        Py_DECREF(fut);
        return sockop_finish(op, result ? 1 : -1, result, presult);
    }
    default:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse already awaited coroutine");
        *presult = NULL;
        return PYGEN_ERROR;
    }
}

/* send(value): yield the future, or raise StopIteration(result). */
static PyObject *
SockOpObj_send(SockOpObj *op, PyObject *arg)
{
    PyObject *result;
    PySendResult r = SockOpObj_am_send(op, arg, &result);
    if (r != PYGEN_RETURN) {
        return r == PYGEN_NEXT ? result : NULL;
    }
    /* a tuple result must not be taken as StopIteration's arguments */
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, result);
    Py_DECREF(result);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
SockOpObj_iternext(SockOpObj *op)
{
    return SockOpObj_send(op, Py_None);
}

/* throw(exc) -- how a Task delivers cancellation: stop waiting, raise. */
static PyObject *
SockOpObj_throw(SockOpObj *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (op->delegate != NULL) {
        PyObject *r = PyObject_VectorcallMethod(
            op->loop->state->str_throw,
            (PyObject *[]){op->delegate, args[0], nargs > 1 ? args[1] : NULL,
                           nargs > 2 ? args[2] : NULL},
            nargs + 1, NULL);
        if (r == NULL) {
            op->state = OP_DONE;
            Py_CLEAR(op->delegate);
        }
        return r;
    }
    sockop_unregister(op);
    Py_CLEAR(op->fut);
    op->state = OP_DONE;
    if (op->view.obj != NULL) {
        PyBuffer_Release(&op->view);
    }
    PyObject *typ = args[0];
    PyObject *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    } else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes or instances deriving "
                        "from BaseException");
    }
    return NULL;
}

static PyObject *
SockOpObj_close(SockOpObj *op, PyObject *Py_UNUSED(ignored))
{
    if (op->delegate != NULL) {
        PyObject *r = PyObject_CallMethod(op->delegate, "close", NULL);
        Py_CLEAR(op->delegate);
        op->state = OP_DONE;
        return r;
    }
    sockop_unregister(op);
    Py_CLEAR(op->fut);
    op->state = OP_DONE;
    Py_RETURN_NONE;
}

static PyObject *
SockOpObj_await(SockOpObj *op)
{
    return Py_NewRef(op);
}

static PyObject *
SockOpObj_repr(SockOpObj *op)
{
    return PyUnicode_FromFormat(
        "<coroutine object BaseSelectorEventLoop.%s at %p>",
        sockop_names[op->kind], op);
}

static int
SockOpObj_traverse(SockOpObj *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(op->loop);
    Py_VISIT(op->sock);
    Py_VISIT(op->arg1);
    Py_VISIT(op->arg2);
    Py_VISIT(op->fut);
    Py_VISIT(op->delegate);
    return 0;
}

static int
SockOpObj_clear(SockOpObj *op)
{
    if (op->loop != NULL) {
        sockop_unregister(op);
    }
    if (op->view.obj != NULL) {
        PyBuffer_Release(&op->view);
    }
    Py_CLEAR(op->loop);
    Py_CLEAR(op->sock);
    Py_CLEAR(op->arg1);
    Py_CLEAR(op->arg2);
    Py_CLEAR(op->fut);
    Py_CLEAR(op->delegate);
    return 0;
}

/* Like a coroutine that never ran: "coroutine ... was never awaited".
 * (From dealloc, not tp_finalize: the warning does not refer to op, and
 * a finalizer costs every op a call.) */
static void
sockop_warn_never_awaited(SockOpObj *op)
{
    PyObject *exc = aloop_fetch_exception();
    if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "coroutine 'BaseSelectorEventLoop.%s' was never "
                         "awaited",
                         sockop_names[op->kind]) < 0) {
        PyErr_WriteUnraisable(NULL);
    }
    if (exc != NULL) {
        aloop_restore_exception(exc);
    }
}

static void
SockOpObj_dealloc(SockOpObj *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (op->state == OP_INIT && op->loop != NULL) {
        sockop_warn_never_awaited(op);
    }
    (void)SockOpObj_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* The stdlib's coroutine names, for Task reprs and tracebacks. */
static PyObject *
SockOpObj_get_name(SockOpObj *op, void *closure)
{
    return PyUnicode_FromString(sockop_names[op->kind]);
}

static PyObject *
SockOpObj_get_qualname(SockOpObj *op, void *closure)
{
    return PyUnicode_FromFormat("BaseSelectorEventLoop.%s",
                                sockop_names[op->kind]);
}

static PyGetSetDef SockOpObj_getset[] = {
    {"__name__", (getter)SockOpObj_get_name, NULL, NULL, NULL},
    {"__qualname__", (getter)SockOpObj_get_qualname, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef SockOpObj_methods[] = {
    {"send", (PyCFunction)SockOpObj_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))SockOpObj_throw, METH_FASTCALL,
     NULL},
    {"close", (PyCFunction)SockOpObj_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot sockop_slots[] = {
    {Py_tp_dealloc, SockOpObj_dealloc},
    {Py_tp_traverse, SockOpObj_traverse},
    {Py_tp_clear, SockOpObj_clear},
    {Py_tp_methods, SockOpObj_methods},
    {Py_tp_getset, SockOpObj_getset},
    {Py_tp_iter, SockOpObj_await},
    {Py_tp_iternext, SockOpObj_iternext},
    {Py_tp_repr, SockOpObj_repr},
    {Py_am_await, SockOpObj_await},
    {Py_am_send, SockOpObj_am_send},
    {0, NULL},
};

static PyType_Spec sockop_spec = {
    .name = "aloop._core.SockOp",
    .basicsize = sizeof(SockOpObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sockop_slots,
};

int
aloop_sockops_setup_types(PyObject *module, aloop_state *st)
{
    st->SockOpType =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &sockop_spec, NULL);
    if (st->SockOpType == NULL) {
        return -1;
    }
    /* asyncio.iscoroutine() accepts registered Coroutine subclasses. */
    PyObject *abc = PyImport_ImportModule("collections.abc");
    PyObject *coro = abc ? PyObject_GetAttrString(abc, "Coroutine") : NULL;
    Py_XDECREF(abc);
    PyObject *r =
        coro ? PyObject_CallMethod(coro, "register", "(O)", st->SockOpType)
             : NULL;
    Py_XDECREF(coro);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* --------------------------------------------------------- loop methods */

static PyObject *
sockop_new(LoopObj *loop, sockop_kind kind, PyObject *sock, PyObject *arg1,
           PyObject *arg2)
{
    SockOpObj *op = PyObject_GC_New(SockOpObj, loop->state->SockOpType);
    if (op == NULL) {
        return NULL;
    }
    op->loop = (LoopObj *)Py_NewRef((PyObject *)loop);
    op->sock = Py_NewRef(sock);
    op->arg1 = Py_XNewRef(arg1);
    op->arg2 = Py_XNewRef(arg2);
    op->fut = NULL;
    op->delegate = NULL;
    op->view.obj = NULL;
    op->pos = 0;
    op->fd = -1;
    op->kind = kind;
    op->state = OP_INIT;
    PyObject_GC_Track(op);
    return (PyObject *)op;
}

/* Each method's parameters after self, as the stdlib names them. */
#define SOCKOP_SIG(kind, nparams, required, ...) \
    [kind] = {"BaseSelectorEventLoop",           \
              NULL,                              \
              {__VA_ARGS__},                     \
              nparams,                           \
              required,                          \
              false,                             \
              NULL}
static const aloop_signature sockop_signatures[] = {
    SOCKOP_SIG(OP_RECV, 2, 2, "sock", "n"),
    SOCKOP_SIG(OP_RECV_INTO, 2, 2, "sock", "buf"),
    SOCKOP_SIG(OP_RECVFROM, 2, 2, "sock", "bufsize"),
    SOCKOP_SIG(OP_RECVFROM_INTO, 3, 2, "sock", "buf", "nbytes"),
    SOCKOP_SIG(OP_SENDALL, 2, 2, "sock", "data"),
    SOCKOP_SIG(OP_SENDTO, 3, 3, "sock", "data", "address"),
    SOCKOP_SIG(OP_ACCEPT, 1, 1, "sock"),
    SOCKOP_SIG(OP_CONNECT, 2, 2, "sock", "address"),
};

static PyObject *
sockop_entry(LoopObj *self, sockop_kind kind, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    if (kwnames == NULL && nargs == sockop_signatures[kind].nparams) {
        return sockop_new(self, kind, args[0], nargs > 1 ? args[1] : NULL,
                          nargs > 2 ? args[2] : NULL); /* the usual call */
    }
    aloop_signature sig = sockop_signatures[kind];
    sig.name = sockop_names[kind];
    aloop_bound_args a;
    if (aloop_args_bind(&sig, args, nargs, kwnames, &a) < 0) {
        return NULL;
    }
    return sockop_new(self, kind, a.params[0], a.params[1], a.params[2]);
}

#define SOCKOP_ENTRY(name, kind)                                          \
    static PyObject *LoopObj_##name(LoopObj *self, PyObject *const *args, \
                                    Py_ssize_t nargs, PyObject *kwnames)  \
    {                                                                     \
        return sockop_entry(self, kind, args, PyVectorcall_NARGS(nargs),  \
                            kwnames);                                     \
    }
SOCKOP_ENTRY(sock_recv, OP_RECV)
SOCKOP_ENTRY(sock_recv_into, OP_RECV_INTO)
SOCKOP_ENTRY(sock_recvfrom, OP_RECVFROM)
SOCKOP_ENTRY(sock_recvfrom_into, OP_RECVFROM_INTO)
SOCKOP_ENTRY(sock_sendall, OP_SENDALL)
SOCKOP_ENTRY(sock_sendto, OP_SENDTO)
SOCKOP_ENTRY(sock_connect, OP_CONNECT)
SOCKOP_ENTRY(sock_accept, OP_ACCEPT)

#define SOCKOP_METHOD(name)                              \
    {#name, (PyCFunction)(void (*)(void))LoopObj_##name, \
     METH_FASTCALL | METH_KEYWORDS, NULL}

PyMethodDef aloop_sockops_methods[] = {
    SOCKOP_METHOD(sock_recv),     SOCKOP_METHOD(sock_recv_into),
    SOCKOP_METHOD(sock_recvfrom), SOCKOP_METHOD(sock_recvfrom_into),
    SOCKOP_METHOD(sock_sendall),  SOCKOP_METHOD(sock_sendto),
    SOCKOP_METHOD(sock_connect),  SOCKOP_METHOD(sock_accept),
    {NULL, NULL, 0, NULL},
};
