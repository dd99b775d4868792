/* sockclass.c -- sockets whose class overrides the I/O methods that the C
 * transports and the C acceptor bypass.
 *
 * The stdlib's socket transports and accept loop call the socket object's
 * methods (sock.recv, sock.send, sock.accept ...); aloop's C versions call
 * recv(2), send(2) and accept4(2) on its fd.  For a socket.socket subclass
 * that overrides one of those methods (an instrumented or test socket) the
 * difference is observable, so such a socket is handed to the stdlib's own
 * selector_events code instead, which runs on this loop through the
 * private hooks it calls (_add_reader, _transports ...).
 *
 * Invariants: socket.socket itself costs one type comparison; only the
 * class is inspected (instance attributes of a subclass are not); the
 * stdlib's code is looked up per call, as module globals are elsewhere.
 * The sock_* operations need none of this: they call the methods of any
 * socket that is not exactly socket.socket.
 */
#include "aloop.h"

int
aloop_sock_overrides(aloop_state *st, PyObject *sock,
                     const char *const *methods)
{
    PyObject *base = st->socket_type;
    if ((PyObject *)Py_TYPE(sock) == base ||
        !PyObject_TypeCheck(sock, (PyTypeObject *)base)) {
        return 0;
    }
    for (; *methods != NULL; methods++) {
        PyObject *own =
            PyObject_GetAttrString((PyObject *)Py_TYPE(sock), *methods);
        PyObject *std = own ? PyObject_GetAttrString(base, *methods) : NULL;
        Py_XDECREF(own);
        Py_XDECREF(std);
        if (std == NULL) {
            return -1;
        }
        if (own != std) { /* both live on as class attributes */
            return 1;
        }
    }
    return 0;
}

PyObject *
aloop_stdlib_call(aloop_state *st, const char *cls, const char *name,
                  PyObject *const *args, size_t nargs, PyObject *kw)
{
    PyObject *owner = cls ? PyObject_GetAttrString(st->selector_events, cls)
                          : Py_NewRef(st->selector_events);
    PyObject *func = owner ? PyObject_GetAttrString(owner, name) : NULL;
    Py_XDECREF(owner);
    if (func == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_VectorcallDict(func, args, nargs, kw);
    Py_DECREF(func);
    return r;
}
