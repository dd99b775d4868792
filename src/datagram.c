/* datagram.c -- DatagramTransport, the C counterpart of selector_events'
 * _SelectorDatagramTransport (UDP and Unix datagram sockets), built on the
 * shared transport half (transport.c).
 *
 * Reading: up to DGRAM_BATCH datagrams per readiness event, each handed
 * to datagram_received(data, addr) with the address converted in C
 * (sockaddr.c); the batch stops early when the transport pauses, closes
 * or the socket runs dry, so order is kept and no endpoint starves the
 * others for long.  The data is a bytes object the loop reuses for the
 * next datagram when the protocol kept no reference to it (spare.c).
 * Receive errors go to error_received(exc) (ICMP errors
 * such as ECONNREFUSED on a connected endpoint), as in the stdlib.
 * Writing: sendto() tries at once; on EAGAIN the datagram is queued with
 * its address and flushed on writability, with _FlowControlMixin's
 * accounting (3.13 counts 8 header bytes per queued datagram).  Connected
 * endpoints use send() and refuse another address with the stdlib's
 * ValueError.  Numeric IPv4/IPv6 and Unix addresses are parsed in C; any
 * other address goes through the socket's own sendto().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "aloop.h"
#include "compat.h"

#define DGRAM_BATCH 16
#if PY_VERSION_HEX >= 0x030D0000
#define DGRAM_HEADER_SIZE 8 /* 3.13 counts a header per queued datagram */
#else
#define DGRAM_HEADER_SIZE 0
#endif

typedef struct {
    PyObject *data; /* bytes */
    PyObject *addr; /* or None */
} dgram_item;

typedef struct {
    ALOOP_TRANSPORT_HEAD
    PyObject *address; /* remote_addr, or NULL */
    PyObject *datagram_received;
    PyObject *error_received;
    dgram_item *items; /* queue: items[head .. head+nitems) */
    size_t head, nitems, cap;
    int family;
    bool connected; /* extra['peername'] is truthy: use send() */
} DgramObj;

#define T(t) ((TransportObj *)(t))

static void
dgram_clear_buffer(TransportObj *tr)
{
    DgramObj *t = (DgramObj *)tr;
    dgram_item *items = t->items;
    size_t head = t->head, n = t->nitems;
    t->items = NULL;
    t->head = t->nitems = t->cap = 0;
    t->buffer_size = 0;
    for (size_t i = 0; i < n; i++) {
        Py_DECREF(items[head + i].data);
        Py_DECREF(items[head + i].addr);
    }
    PyMem_Free(items);
}

static int
dgram_push(DgramObj *t, PyObject *data, PyObject *addr, bool front)
{
    if (t->nitems + 1 > t->cap || (front && t->head == 0) ||
        (!front && t->head + t->nitems == t->cap)) {
        size_t ncap = t->cap < 8 ? 8 : t->cap * 2;
        dgram_item *n = PyMem_Malloc(ncap * sizeof(*n));
        if (n == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        size_t start = 1; /* leave room to push at the front */
        if (t->nitems) {
            memcpy(n + start, t->items + t->head,
                   t->nitems * sizeof(dgram_item));
        }
        PyMem_Free(t->items);
        t->items = n;
        t->cap = ncap;
        t->head = start;
    }
    if (front) {
        t->head--;
        t->items[t->head] = (dgram_item){Py_NewRef(data), Py_NewRef(addr)};
    } else {
        t->items[t->head + t->nitems] =
            (dgram_item){Py_NewRef(data), Py_NewRef(addr)};
    }
    t->nitems++;
    t->buffer_size += PyBytes_GET_SIZE(data) + DGRAM_HEADER_SIZE;
    return 0;
}

/* ------------------------------------------------------------- sending */

/* Parse a numeric IPv4/IPv6 or Unix address; 1 on success, 0 to fall back
 * to the socket's sendto() (names, odd types), never an exception. */
static int
dgram_parse_addr(DgramObj *t, PyObject *addr, struct sockaddr_storage *ss,
                 socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (t->family == AF_UNIX) {
        if (!PyUnicode_Check(addr)) {
            return 0;
        }
        Py_ssize_t n;
        const char *path = PyUnicode_AsUTF8AndSize(addr, &n);
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        if (path == NULL || n == 0 || (size_t)n >= sizeof(un->sun_path)) {
            PyErr_Clear();
            return 0;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, (size_t)n);
        /* as the socket module: the length is the name's, which for an
         * abstract name ("\0...") is all there is to it */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 1;
    }
    if (!PyTuple_CheckExact(addr) || PyTuple_GET_SIZE(addr) < 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(addr, 0)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(addr, 1))) {
        return 0;
    }
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(addr, 0));
    long port = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (host == NULL || port < 0 || port > 65535) {
        PyErr_Clear();
        return 0;
    }
    if (t->family == AF_INET && PyTuple_GET_SIZE(addr) == 2) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1) {
            return 0;
        }
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof(*in);
        return 1;
    }
    if (t->family == AF_INET6 && PyTuple_GET_SIZE(addr) <= 4 &&
        strchr(host, '%') == NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1) {
            return 0;
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        for (Py_ssize_t i = 2; i < PyTuple_GET_SIZE(addr); i++) {
            /* anything the socket module would refuse is left to it */
            PyObject *v = PyTuple_GET_ITEM(addr, i);
            if (!PyLong_CheckExact(v)) {
                return 0;
            }
            unsigned long x = PyLong_AsUnsignedLong(v);
            if (PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            if (x > (i == 2 ? 0xfffffUL : 0xffffffffUL)) {
                return 0;
            }
            if (i == 2) {
                in6->sin6_flowinfo = htonl((uint32_t)x);
            } else {
                in6->sin6_scope_id = (uint32_t)x;
            }
        }
        *len = sizeof(*in6);
        return 1;
    }
    return 0;
}

/* Send one datagram: 1 sent, 0 would block, -1 exception set. */
static int
dgram_send(DgramObj *t, PyObject *data, const char *buf, Py_ssize_t len,
           PyObject *addr, bool retry)
{
    ssize_t n;
    if (t->connected) {
        n = send(t->fd, buf, (size_t)len, MSG_NOSIGNAL);
    } else {
        struct sockaddr_storage ss;
        socklen_t sslen = 0;
        if (addr == Py_None || !dgram_parse_addr(t, addr, &ss, &sslen)) {
            /* the socket's own sendto() parses (and may resolve) it */
            PyObject *r = retry ? PyObject_CallMethod(t->sock, "sendto", "OiO",
                                                      data, 0, addr)
                                : PyObject_CallMethod(t->sock, "sendto", "OO",
                                                      data, addr);
            if (r != NULL) {
                Py_DECREF(r);
                return 1;
            }
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError) ||
                PyErr_ExceptionMatches(PyExc_InterruptedError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        n = sendto(t->fd, buf, (size_t)len, MSG_NOSIGNAL,
                   (struct sockaddr *)&ss, sslen);
    }
    if (n >= 0) {
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return 0;
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* protocol.error_received(exc): 0, or -1 with its exception (an
 * AttributeError if the protocol has none, as in the stdlib). */
static int
dgram_error_received(DgramObj *t, PyObject *exc)
{
    PyObject *r =
        t->error_received
            ? PyObject_CallOneArg(t->error_received, exc)
            : PyObject_CallMethod(t->protocol, "error_received", "(O)", exc);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* The current exception after a send: OSError -> error_received(exc),
 * others are fatal. */
static int
dgram_send_failed(DgramObj *t)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    if (PyErr_ExceptionMatches(PyExc_OSError)) {
        PyObject *exc = aloop_fetch_exception();
        int rc = dgram_error_received(t, exc);
        Py_DECREF(exc);
        return rc;
    }
    return aloop_transport_fatal_current(
        T(t), "Fatal write error on datagram transport");
}

/* _sendto_ready */
static int
dgram_write_ready(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    DgramObj *t = (DgramObj *)owner;
    Py_INCREF(t);
    int rc = 0;
    while (t->nitems) {
        dgram_item it = t->items[t->head];
        t->head++;
        t->nitems--;
        t->buffer_size -= PyBytes_GET_SIZE(it.data) + DGRAM_HEADER_SIZE;
        int s = dgram_send(t, it.data, PyBytes_AS_STRING(it.data),
                           PyBytes_GET_SIZE(it.data), it.addr, true);
        if (s == 0) {
            rc = dgram_push(t, it.data, it.addr, true); /* try again later */
        } else if (s < 0) {
            rc = dgram_send_failed(t);
        }
        Py_DECREF(it.data);
        Py_DECREF(it.addr);
        if (s <= 0) {
            if (s < 0 || rc < 0) {
                goto done; /* the stdlib returns here, writer kept */
            }
            break;
        }
    }
    if (aloop_transport_maybe_resume(T(t)) < 0) { /* may queue more */
        rc = -1;
        goto done;
    }
    if (t->nitems == 0) {
        rc = aloop_transport_watch(T(t), ALOOP_WRITE, false);
        if (rc == 0 && t->closing) {
            PyObject *r = aloop_transport_call_connection_lost(T(t), Py_None);
            Py_XDECREF(r);
            rc = r ? 0 : -1;
        }
    }
done:
    Py_DECREF(t);
    return rc < 0 ? -1 : 0;
}

static PyObject *
DgramObj_sendto(DgramObj *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", "addr", NULL};
    PyObject *data, *addr = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:sendto", kwlist, &data,
                                     &addr)) {
        return NULL;
    }
    if (!PyBytes_Check(data) && !PyByteArray_Check(data) &&
        !PyMemoryView_Check(data)) {
        aloop_type_error_not_bytes(data);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
#if PY_VERSION_HEX < 0x030D0000
    if (view.len == 0) { /* 3.13 sends empty datagrams, 3.11/3.12 don't */
        result = Py_NewRef(Py_None);
        goto done;
    }
#endif
    if (t->address != NULL) {
        if (addr != Py_None) {
            int eq = PyObject_RichCompareBool(addr, t->address, Py_EQ);
            if (eq < 0) {
                goto done;
            }
            if (!eq) {
                PyErr_Format(PyExc_ValueError,
                             "Invalid address: must be None or %S",
                             t->address);
                goto done;
            }
        }
        addr = t->address;
    }
    if (t->conn_lost && t->address != NULL) {
        if (aloop_transport_lost_writes(T(t)) == 0) {
            result = Py_NewRef(Py_None);
        }
        goto done;
    }
    if (t->sock == NULL) {
        /* connection_lost ran: the stdlib's self._sock is None */
        PyErr_Format(PyExc_AttributeError,
                     "'NoneType' object has no attribute '%s'",
                     t->connected ? "send" : "sendto");
        goto done;
    }
    if (t->nitems == 0) {
        int s = dgram_send(t, data, view.buf, view.len, addr, false);
        if (s > 0 || (s < 0 && dgram_send_failed(t) == 0)) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (s < 0 || aloop_transport_watch(T(t), ALOOP_WRITE, true) < 0) {
            goto done;
        }
    }
    PyObject *copy = PyBytes_FromStringAndSize(view.buf, view.len);
    if (copy == NULL) {
        goto done;
    }
    int rc = dgram_push(t, copy, addr, false);
    Py_DECREF(copy);
    if (rc == 0 && aloop_transport_maybe_pause(T(t)) == 0) {
        result = Py_NewRef(Py_None);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------- reading */

static int
dgram_read_one(DgramObj *t, LoopObj *loop)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    /* recvfrom(max_size): a longer datagram is cut, as the stdlib's */
    Py_ssize_t limit = t->max_size;
    char *buf = loop->read_buf;
    if (limit < 0) {
        PyErr_SetString(PyExc_ValueError, "negative buffersize in recvfrom");
        return aloop_transport_fatal_current(
            T(t), "Fatal read error on datagram transport");
    }
    if (limit > ALOOP_READ_BUF_SIZE && (buf = PyMem_Malloc(limit)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ssize_t n;
    do {
        n = recvfrom(t->fd, buf, (size_t)limit, 0, (struct sockaddr *)&ss,
                     &len);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    PyObject *data = n > 0    ? aloop_spare_bytes(loop, buf, n)
                     : n == 0 ? PyBytes_FromStringAndSize(NULL, 0)
                              : NULL;
    if (buf != loop->read_buf) {
        PyMem_Free(buf);
    }
    if (n >= 0 && data == NULL) {
        return -1;
    }
    if (n < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) {
            return 0;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = aloop_fetch_exception();
        int rc = dgram_error_received(t, exc);
        Py_DECREF(exc);
        return rc;
    }
    PyObject *addr;
    if (len == 0) {
        addr = Py_NewRef(Py_None); /* as socketmodule: no address */
    } else {
        addr = aloop_sockaddr_to_python((struct sockaddr *)&ss, len);
        if (addr == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(data);
                return -1;
            }
            addr = Py_NewRef(Py_None);
        }
    }
    PyObject *r = NULL;
    if (t->datagram_received != NULL) {
        PyObject *args[2] = {data, addr};
        r = PyObject_Vectorcall(t->datagram_received, args, 2, NULL);
    } else {
        /* lacking when the protocol was set: looked up per call, as the
         * stdlib does, for its AttributeError */
        r = PyObject_CallMethod(t->protocol, "datagram_received", "OO", data,
                                addr);
    }
    aloop_spare_release(loop, data);
    Py_DECREF(addr);
    Py_XDECREF(r);
    return r ? 1 : -1;
}

static int
dgram_read_ready(LoopObj *loop, PyObject *owner, uint32_t ev)
{
    DgramObj *t = (DgramObj *)owner;
    if (aloop_loop_read_buf(loop) == NULL) {
        return -1;
    }
    Py_INCREF(t);
    int rc = 0;
    for (int i = 0; i < DGRAM_BATCH; i++) {
        if (t->conn_lost || t->closing || t->paused || t->loop == NULL) {
            break;
        }
        rc = dgram_read_one(t, loop);
        if (rc <= 0) {
            break;
        }
        rc = 0;
    }
    Py_DECREF(t);
    return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------- the type */

static int
dgram_set_protocol(TransportObj *tr, PyObject *protocol)
{
    DgramObj *t = (DgramObj *)tr;
    PyObject *dr = PyObject_GetAttrString(protocol, "datagram_received");
    if (dr == NULL) {
        PyErr_Clear();
    }
    PyObject *er = PyObject_GetAttrString(protocol, "error_received");
    if (er == NULL) {
        PyErr_Clear();
    }
    Py_XSETREF(t->datagram_received, dr);
    Py_XSETREF(t->error_received, er);
    return 0;
}

static void
dgram_clear_protocol(TransportObj *tr)
{
    DgramObj *t = (DgramObj *)tr;
    Py_CLEAR(t->datagram_received);
    Py_CLEAR(t->error_received);
}

static int
dgram_traverse(TransportObj *tr, visitproc visit, void *arg)
{
    DgramObj *t = (DgramObj *)tr;
    Py_VISIT(t->address);
    Py_VISIT(t->datagram_received);
    Py_VISIT(t->error_received);
    for (size_t i = 0; i < t->nitems; i++) {
        Py_VISIT(t->items[t->head + i].data);
        Py_VISIT(t->items[t->head + i].addr);
    }
    return 0;
}

static const aloop_transport_ops dgram_ops = {
    .read_ready = dgram_read_ready,
    .write_ready = dgram_write_ready,
    .write_ready_name = "_sendto_ready",
    .clear_buffer = dgram_clear_buffer,
    .set_protocol = dgram_set_protocol,
    .clear_protocol = dgram_clear_protocol,
    .traverse = dgram_traverse,
};

static PyObject *
DgramObj_get_address(DgramObj *t, void *c)
{
    return Py_NewRef(t->address ? t->address : Py_None);
}

static PyObject *
DgramObj_get_buffer(DgramObj *t, void *c)
{
    /* _buffer: the queued (data, addr) pairs, like the stdlib's deque */
    PyObject *list = PyList_New((Py_ssize_t)t->nitems);
    for (size_t i = 0; list != NULL && i < t->nitems; i++) {
        dgram_item *it = &t->items[t->head + i];
        PyObject *pair = PyTuple_Pack(2, it->data, it->addr);
        if (pair == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

static PyObject *
DgramObj__sendto_ready(DgramObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->loop == NULL) {
        Py_RETURN_NONE;
    }
    return dgram_write_ready(t->loop, (PyObject *)t, ALOOP_WRITE) < 0
               ? NULL
               : Py_NewRef(Py_None);
}

static PyGetSetDef DgramObj_getset[] = {
    {"_address", (getter)DgramObj_get_address, NULL, NULL, NULL},
    {"_buffer", (getter)DgramObj_get_buffer, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef DgramObj_methods[] = {
    {"sendto", (PyCFunction)(void (*)(void))DgramObj_sendto,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_sendto_ready", (PyCFunction)DgramObj__sendto_ready, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* Not immutable: asyncio.DatagramTransport is a mutable base. */
static PyType_Spec dgram_spec = {
    .name = "aloop._core.DatagramTransport",
    .basicsize = sizeof(DgramObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
};

/* What _SelectorDatagramTransport reads and writes through. */
static const char *const dgram_sock_methods[] = {"recvfrom", "sendto", "send",
                                                 NULL};

/* loop._make_datagram_transport(sock, protocol, address=None, waiter=None,
 *                               extra=None): this C transport, or the
 * stdlib's for a socket that overrides its I/O methods. */
static PyObject *
LoopObj__make_datagram_transport(LoopObj *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"sock",   "protocol", "address",
                             "waiter", "extra",    NULL};
    PyObject *sock, *protocol, *address = Py_None, *waiter = Py_None;
    PyObject *extra = Py_None;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "OO|OOO:_make_datagram_transport", kwlist, &sock,
            &protocol, &address, &waiter, &extra)) {
        return NULL;
    }
    int own = aloop_sock_overrides(self->state, sock, dgram_sock_methods);
    if (own != 0) {
        PyObject *targs[] = {(PyObject *)self, sock,   protocol,
                             address,          waiter, extra};
        return own < 0 ? NULL
                       : aloop_stdlib_call(self->state, NULL,
                                           "_SelectorDatagramTransport", targs,
                                           6, NULL);
    }
    DgramObj *t = PyObject_GC_New(DgramObj, self->state->DatagramType);
    if (t == NULL) {
        return NULL;
    }
    memset((char *)t + sizeof(PyObject), 0,
           sizeof(DgramObj) - sizeof(PyObject));
    PyObject_GC_Track(t);
    if (address != Py_None) {
        t->address = Py_NewRef(address);
    }
    PyObject *fam = PyObject_GetAttrString(sock, "family");
    t->family = fam ? (int)PyLong_AsLong(fam) : -1;
    Py_XDECREF(fam);
    if (PyErr_Occurred() ||
        aloop_transport_init(T(t), &dgram_ops, self, sock, protocol, waiter,
                             extra, Py_None) < 0) {
        goto error;
    }
    PyObject *peer =
        PyDict_GetItemWithError(t->extra, self->state->str_peername);
    int truth = peer ? PyObject_IsTrue(peer) : (PyErr_Occurred() ? -1 : 0);
    if (truth < 0) {
        goto error;
    }
    t->connected = truth;
    return (PyObject *)t;
error:
    Py_CLEAR(t->sock); /* the caller owns the socket */
    Py_DECREF(t);
    return NULL;
}

PyMethodDef aloop_datagram_loop_methods[] = {
    {"_make_datagram_transport",
     (PyCFunction)(void (*)(void))LoopObj__make_datagram_transport,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {NULL, NULL, 0, NULL},
};

int
aloop_datagram_setup_types(PyObject *module, aloop_state *st)
{
    st->DatagramType =
        aloop_transport_make_type(module, &dgram_spec, "DatagramTransport",
                                  DgramObj_methods, DgramObj_getset);
    if (st->DatagramType == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "DatagramTransport",
                                 (PyObject *)st->DatagramType);
}
