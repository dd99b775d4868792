/* server.c -- the accept machinery behind asyncio's Server:
 * loop._start_serving().  _stop_serving stays the stdlib's (it calls our
 * _remove_reader, and on 3.13 unlinks a Unix server's socket path).
 *
 * _start_serving registers an Acceptor (the listening socket and the
 * serving parameters) as the internal reader of the listening fd.  On
 * readiness it accepts up to `backlog` connections with accept4(NONBLOCK |
 * CLOEXEC); for a plain connection it calls the protocol factory and
 * builds a StreamTransport at once (no coroutine, no Task); with SSL it
 * runs the stdlib's own _accept_connection2 coroutine in a Task, so the
 * sslproto pipeline is exactly the stdlib's; so it does when the loop
 * overrides _accept_connection2 or _make_socket_transport (loopclass.c).  Out
 * of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it reports
 * through the exception handler, stops accepting and calls _start_serving
 * again after ACCEPT_RETRY_DELAY (1 s), as the stdlib does; established
 * connections are not affected.  Errors creating a connection's protocol or
 * transport are reported only in debug mode, like _accept_connection2.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aloop.h"
#include "compat.h"

#define ACCEPT_RETRY_DELAY 1.0

typedef struct {
    PyObject_HEAD PyObject *protocol_factory;
    PyObject *sock;
    PyObject *sslcontext;
    PyObject *server;
    PyObject *ssl_handshake_timeout;
    PyObject *ssl_shutdown_timeout;
    PyObject *backlog_obj;
    PyObject *context; /* the reader Handle's: a copy of _start_serving's */
    Py_ssize_t backlog;
    int fd;
    int family, type, proto; /* of the listening socket */
} AcceptorObj;

static int
acceptor_int_attr(PyObject *sock, const char *name, int *out)
{
    PyObject *v = PyObject_GetAttrString(sock, name);
    if (v == NULL) {
        return -1;
    }
    long l = PyLong_AsLong(v);
    Py_DECREF(v);
    if (l == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int)l;
    return 0;
}

/* Report the current error as _accept_connection2 does: in debug mode. */
static int
acceptor_report_creation_error(LoopObj *loop, PyObject *protocol)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = 0;
    if (loop->debug) {
        PyObject *ctx = Py_BuildValue(
            "{sssO}", "message",
            "Error on transport creation for incoming connection", "exception",
            exc);
        if (ctx != NULL && protocol != NULL) {
            rc = PyDict_SetItemString(ctx, "protocol", protocol);
        }
        rc = (ctx == NULL || rc < 0)
                 ? -1
                 : aloop_loop_call_exception_handler(loop, ctx);
        Py_XDECREF(ctx);
    }
    Py_DECREF(exc);
    return rc;
}

/* One accepted connection: socket object, then protocol + transport. */
static int
acceptor_connection(LoopObj *loop, AcceptorObj *a, int cfd,
                    struct sockaddr *sa, socklen_t salen)
{
    aloop_state *st = loop->state;
    /* SOCK_NONBLOCK in the type: the socket object starts non-blocking
     * (timeout 0.0, type without the flag) with no fcntl(), as the fd is
     * from accept4(SOCK_NONBLOCK); the stdlib calls setblocking(False). */
    PyObject *conn =
        PyObject_CallFunction(st->socket_type, "iiii", a->family,
                              a->type | SOCK_NONBLOCK, a->proto, cfd);
    if (conn == NULL) {
        close(cfd);
        return acceptor_report_creation_error(loop, NULL);
    }
    PyObject *addr = aloop_sockaddr_to_python(sa, salen);
    if (addr == NULL && !PyErr_Occurred()) {
        addr = PyObject_CallMethod(conn, "getpeername", NULL);
    }
    PyObject *protocol = NULL, *extra = NULL;
    int rc = -1;
    if (addr == NULL) {
        goto fail;
    }
    if (loop->debug) {
        PyObject *logger = aloop_logger(st->selector_events);
        PyObject *lr =
            logger ? PyObject_CallMethod(logger, "debug", "sOOO",
                                         "%r got a new connection from %r: %r",
                                         a->server, addr, conn)
                   : NULL;
        Py_XDECREF(logger);
        Py_XDECREF(lr);
        if (lr == NULL) {
            goto fail;
        }
    }
    extra = Py_BuildValue("{sO}", "peername", addr);
    if (extra == NULL) {
        goto fail;
    }
    rc = aloop_loop_overrides(
        loop, ALOOP_HOOK(ALOOP_HOOK_ACCEPT_CONNECTION2) |
                  ALOOP_HOOK(ALOOP_HOOK_MAKE_SOCKET_TRANSPORT));
    if (rc < 0) {
        goto fail;
    }
    if (a->sslcontext != Py_None || rc > 0) {
        /* The stdlib's coroutine, in a Task, builds the sslproto pipeline
         * or calls the overridden method. */
        PyObject *coro = PyObject_CallMethod(
            (PyObject *)loop, "_accept_connection2", "OOOOOOO",
            a->protocol_factory, conn, extra, a->sslcontext, a->server,
            a->ssl_handshake_timeout, a->ssl_shutdown_timeout);
        PyObject *task = coro ? PyObject_CallMethod((PyObject *)loop,
                                                    "create_task", "(O)", coro)
                              : NULL;
        Py_XDECREF(coro);
        Py_XDECREF(task);
        rc = task ? 0 : -1;
        goto done;
    }
    /* The stdlib runs _accept_connection2 in a Task: the factory and the
     * transport's creation see a copy of the accept handler's context. */
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        goto fail;
    }
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        goto fail;
    }
    protocol = PyObject_CallNoArgs(a->protocol_factory);
    PyObject *transport = protocol ? aloop_stream_new(loop, conn, protocol,
                                                      NULL, extra, a->server)
                                   : NULL;
    int exited = PyContext_Exit(ctx);
    Py_DECREF(ctx);
    if (transport == NULL || exited < 0) {
        Py_XDECREF(transport);
        goto fail;
    }
    Py_DECREF(transport); /* the loop holds it while it is connected */
    rc = 0;
    goto done;
fail:
    if (PyErr_Occurred()) {
        PyObject *exc = aloop_fetch_exception();
        PyObject *cr = PyObject_CallMethod(conn, "close", NULL);
        Py_XDECREF(cr);
        PyErr_Clear();
        aloop_restore_exception(exc);
    }
    rc = acceptor_report_creation_error(loop, protocol);
done:
    Py_XDECREF(protocol);
    Py_XDECREF(extra);
    Py_XDECREF(addr);
    Py_DECREF(conn);
    return rc;
}

static int
acceptor_ready(LoopObj *loop, PyObject *owner, uint32_t events);

/* accept() failed with EMFILE & co: report, pause, retry in a second. */
static int
acceptor_out_of_resources(LoopObj *loop, AcceptorObj *a, int err)
{
    aloop_state *st = loop->state;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    PyObject *exc = aloop_fetch_exception();
    PyObject *tsock = PyObject_CallOneArg(st->TransportSocket, a->sock);
    PyObject *ctx =
        tsock ? Py_BuildValue("{sssOsO}", "message",
                              "socket.accept() out of system resource",
                              "exception", exc, "socket", tsock)
              : NULL;
    Py_DECREF(exc);
    Py_XDECREF(tsock);
    if (ctx == NULL) {
        return -1;
    }
    int rc = aloop_loop_call_exception_handler(loop, ctx);
    Py_DECREF(ctx);
    if (rc < 0) {
        return -1;
    }
    Py_INCREF(a); /* the watcher's reference may be the last one */
    PyObject *old = NULL;
    rc = aloop_loop_set_watcher(loop, a->fd, ALOOP_READ, NULL, NULL, &old);
    Py_XDECREF(old);
    PyObject *r = NULL;
    PyObject *restart =
        rc == 0 ? PyObject_GetAttrString((PyObject *)loop, "_start_serving")
                : NULL;
    if (restart != NULL) {
        r = PyObject_CallMethod(
            (PyObject *)loop, "call_later", "dOOOOOOOO", ACCEPT_RETRY_DELAY,
            restart, a->protocol_factory, a->sock, a->sslcontext, a->server,
            a->backlog_obj, a->ssl_handshake_timeout, a->ssl_shutdown_timeout);
        Py_DECREF(restart);
    } else if (rc < 0) {
        aloop_errno_error(rc);
    }
    Py_DECREF(a);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
acceptor_accept(LoopObj *loop, AcceptorObj *a);

/* The listening fd's reader: accept in the acceptor's context. */
static int
acceptor_ready(LoopObj *loop, PyObject *owner, uint32_t events)
{
    AcceptorObj *a = (AcceptorObj *)owner;
    if (!aloop_loop_watches(loop, a->fd, ALOOP_READ, owner)) {
        return 0; /* the server closed since: its Handle is cancelled */
    }
    PyObject *ctx = Py_NewRef(a->context);
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        return aloop_loop_report_exception(loop,
                                           "Exception in accept callback");
    }
    Py_INCREF(a);
    int rc = acceptor_accept(loop, a);
    Py_DECREF(a);
    if (PyContext_Exit(ctx) < 0) {
        rc = -1;
    }
    Py_DECREF(ctx);
    return rc;
}

static int
acceptor_accept(LoopObj *loop, AcceptorObj *a)
{
    for (Py_ssize_t i = 0; i < a->backlog; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        int cfd = accept4(a->fd, (struct sockaddr *)&ss, &len,
                          SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR ||
                err == ECONNABORTED) {
                return 0;
            }
            if (err == EMFILE || err == ENFILE || err == ENOBUFS ||
                err == ENOMEM) {
                int rc = acceptor_out_of_resources(loop, a, err);
                return rc < 0 ? aloop_loop_report_exception(
                                    loop, "Exception in accept callback")
                              : 0;
            }
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            return aloop_loop_report_exception(loop,
                                               "Exception in accept callback");
        }
        if (acceptor_connection(loop, a, cfd, (struct sockaddr *)&ss, len) <
            0) {
            return aloop_loop_report_exception(loop,
                                               "Exception in accept callback");
        }
        /* The factory may have closed the server, and the fd number may
         * be another socket's already. */
        if (loop->closed ||
            !aloop_loop_watches(loop, a->fd, ALOOP_READ, (PyObject *)a)) {
            return 0;
        }
    }
    return 0;
}

static int
AcceptorObj_traverse(AcceptorObj *a, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(a));
    Py_VISIT(a->protocol_factory);
    Py_VISIT(a->sock);
    Py_VISIT(a->sslcontext);
    Py_VISIT(a->server);
    Py_VISIT(a->ssl_handshake_timeout);
    Py_VISIT(a->ssl_shutdown_timeout);
    Py_VISIT(a->backlog_obj);
    Py_VISIT(a->context);
    return 0;
}

static int
AcceptorObj_clear(AcceptorObj *a)
{
    Py_CLEAR(a->protocol_factory);
    Py_CLEAR(a->sock);
    Py_CLEAR(a->sslcontext);
    Py_CLEAR(a->server);
    Py_CLEAR(a->ssl_handshake_timeout);
    Py_CLEAR(a->ssl_shutdown_timeout);
    Py_CLEAR(a->backlog_obj);
    Py_CLEAR(a->context);
    return 0;
}

static void
AcceptorObj_dealloc(AcceptorObj *a)
{
    PyTypeObject *tp = Py_TYPE(a);
    PyObject_GC_UnTrack(a);
    (void)AcceptorObj_clear(a);
    tp->tp_free(a);
    Py_DECREF(tp);
}

static PyType_Slot acceptor_slots[] = {
    {Py_tp_dealloc, AcceptorObj_dealloc},
    {Py_tp_traverse, AcceptorObj_traverse},
    {Py_tp_clear, AcceptorObj_clear},
    {0, NULL},
};

static PyType_Spec acceptor_spec = {
    .name = "aloop._core.Acceptor",
    .basicsize = sizeof(AcceptorObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = acceptor_slots,
};

/* The stdlib's _start_serving, for a listening socket whose class
 * overrides accept() or a loop overriding _accept_connection: its accept
 * loop calls them.  args holds at
 * most the 7 parameters (checked by the caller's parsing). */
static PyObject *
stdlib_start_serving(LoopObj *self, PyObject *args, PyObject *kw)
{
    PyObject *full[8] = {(PyObject *)self};
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    n = n < 7 ? n : 7;
    for (Py_ssize_t i = 0; i < n; i++) {
        full[i + 1] = PyTuple_GET_ITEM(args, i);
    }
    return aloop_stdlib_call(self->state, "BaseSelectorEventLoop",
                             "_start_serving", full, (size_t)n + 1, kw);
}

/* _start_serving(protocol_factory, sock, sslcontext=None, server=None,
 *                backlog=100, ssl_handshake_timeout=...,
 *                ssl_shutdown_timeout=...) */
static PyObject *
LoopObj__start_serving(LoopObj *self, PyObject *args, PyObject *kw)
{
    static const char *const accept_method[] = {"accept", NULL};
    static char *kwlist[] = {"protocol_factory",
                             "sock",
                             "sslcontext",
                             "server",
                             "backlog",
                             "ssl_handshake_timeout",
                             "ssl_shutdown_timeout",
                             NULL};
    aloop_state *st = self->state;
    PyObject *factory, *sock, *sslcontext = Py_None, *server = Py_None;
    PyObject *backlog = NULL, *hs = st->ssl_handshake_timeout,
             *sd = st->ssl_shutdown_timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OOOOO:_start_serving",
                                     kwlist, &factory, &sock, &sslcontext,
                                     &server, &backlog, &hs, &sd) ||
        aloop_loop_check_closed(self) < 0) {
        return NULL;
    }
    int own = aloop_sock_overrides(st, sock, accept_method);
    if (own == 0) {
        own = aloop_loop_overrides(self,
                                   ALOOP_HOOK(ALOOP_HOOK_ACCEPT_CONNECTION));
    }
    if (own != 0) {
        return own > 0 ? stdlib_start_serving(self, args, kw) : NULL;
    }
    AcceptorObj *a = PyObject_GC_New(AcceptorObj, st->AcceptorType);
    if (a == NULL) {
        return NULL;
    }
    a->protocol_factory = Py_NewRef(factory);
    a->sock = Py_NewRef(sock);
    a->sslcontext = Py_NewRef(sslcontext);
    a->server = Py_NewRef(server);
    a->ssl_handshake_timeout = Py_NewRef(hs);
    a->ssl_shutdown_timeout = Py_NewRef(sd);
    a->backlog_obj = backlog ? Py_NewRef(backlog) : PyLong_FromLong(100);
    a->context = PyContext_CopyCurrent();
    a->backlog = 0;
    a->fd = -1;
    PyObject_GC_Track(a);
    if (a->backlog_obj == NULL || a->context == NULL) {
        goto error;
    }
    a->backlog = PyNumber_AsSsize_t(a->backlog_obj, PyExc_OverflowError);
    if (a->backlog == -1 && PyErr_Occurred()) {
        goto error;
    }
    /* _add_reader(sock.fileno(), ...) validates first, as the stdlib */
    PyObject *fdobj = PyObject_CallMethod(sock, "fileno", NULL);
    if (fdobj == NULL) {
        goto error;
    }
    a->fd = aloop_fileobj_to_fd(fdobj);
    Py_DECREF(fdobj);
    if (a->fd < 0 || acceptor_int_attr(sock, "family", &a->family) < 0 ||
        acceptor_int_attr(sock, "type", &a->type) < 0 ||
        acceptor_int_attr(sock, "proto", &a->proto) < 0) {
        goto error;
    }
    PyObject *old = NULL;
    int rc = aloop_loop_set_watcher(self, a->fd, ALOOP_READ, (PyObject *)a,
                                    acceptor_ready, &old);
    if (rc < 0) {
        aloop_errno_error(rc);
        goto error;
    }
    Py_DECREF(a);
    if (old != NULL && Py_IS_TYPE(old, st->HandleType)) {
        rc = aloop_handle_cancel((HandleObj *)old); /* as _add_reader */
    }
    Py_XDECREF(old);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
error:
    Py_DECREF(a);
    return NULL;
}

PyMethodDef aloop_server_methods[] = {
    {"_start_serving", (PyCFunction)(void (*)(void))LoopObj__start_serving,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

int
aloop_server_setup_types(PyObject *module, aloop_state *st)
{
    st->AcceptorType =
        (PyTypeObject *)PyType_FromModuleAndSpec(module, &acceptor_spec, NULL);
    return st->AcceptorType ? 0 : -1;
}
