/* sockaddr.c -- struct sockaddr -> Python address, as socketmodule's
 * makesockaddr() builds it, for the families the transports meet:
 *   AF_INET  -> (host, port)
 *   AF_INET6 -> (host, port, flowinfo, scope_id)
 *   AF_UNIX  -> str path, or bytes for a Linux abstract name
 * IPv4 hosts are formatted here (dotted quad, as inet_ntoa); IPv6 hosts come
 * from getnameinfo(NI_NUMERICHOST), like socketmodule, so scoped addresses
 * read the same ("fe80::1%eth0").  Any other family returns NULL without
 * an exception: callers then ask the socket object.
 *
 * A memo remembers the last conversion: every connection accepted by one
 * listener has the same local address, so its sockname is one shared
 * (immutable) object instead of one conversion per connection.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "aloop.h"

/* (host, port) with host in dotted-quad form. */
static PyObject *
sockaddr_ipv4(const struct sockaddr_in *in)
{
    const unsigned char *b = (const unsigned char *)&in->sin_addr;
    char host[16], *p = host;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100) {
            *p++ = (char)('0' + v / 100);
        }
        if (v >= 10) {
            *p++ = (char)('0' + v / 10 % 10);
        }
        *p++ = (char)('0' + v % 10);
        *p++ = '.';
    }
    PyObject *h = PyUnicode_FromStringAndSize(host, p - host - 1);
    PyObject *port = h ? PyLong_FromLong(ntohs(in->sin_port)) : NULL;
    PyObject *addr = port ? PyTuple_New(2) : NULL;
    if (addr == NULL) {
        Py_XDECREF(h);
        Py_XDECREF(port);
        return NULL;
    }
    PyTuple_SET_ITEM(addr, 0, h);
    PyTuple_SET_ITEM(addr, 1, port);
    return addr;
}

PyObject *
aloop_sockaddr_to_python(const struct sockaddr *sa, unsigned int len)
{
    char host[NI_MAXHOST];
    switch (sa->sa_family) {
    case AF_INET:
        if (len < sizeof(struct sockaddr_in)) {
            return NULL;
        }
        return sockaddr_ipv4((const struct sockaddr_in *)sa);
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (getnameinfo(sa, len, host, sizeof(host), NULL, 0,
                        NI_NUMERICHOST) != 0) {
            return NULL;
        }
        return Py_BuildValue("(siII)", host, ntohs(in6->sin6_port),
                             ntohl(in6->sin6_flowinfo), in6->sin6_scope_id);
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        size_t pathlen = len > offsetof(struct sockaddr_un, sun_path)
                             ? len - offsetof(struct sockaddr_un, sun_path)
                             : 0;
        if (pathlen > sizeof(un->sun_path)) {
            pathlen = sizeof(un->sun_path);
        }
        if (pathlen > 0 && un->sun_path[0] == 0) {
            return PyBytes_FromStringAndSize(un->sun_path, pathlen);
        }
        return PyUnicode_DecodeFSDefaultAndSize(
            un->sun_path, strnlen(un->sun_path, pathlen));
    }
    default:
        return NULL;
    }
}

PyObject *
aloop_sockaddr_memo_get(aloop_sockaddr_memo *m, const struct sockaddr *sa,
                        unsigned int len)
{
    if (m->obj != NULL && m->len == len && memcmp(&m->raw, sa, len) == 0) {
        return Py_NewRef(m->obj);
    }
    PyObject *obj = aloop_sockaddr_to_python(sa, len);
    if (obj != NULL && len <= sizeof(m->raw)) {
        memcpy(&m->raw, sa, len);
        m->len = len;
        Py_XSETREF(m->obj, Py_NewRef(obj));
    }
    return obj;
}

void
aloop_sockaddr_memo_clear(aloop_sockaddr_memo *m)
{
    Py_CLEAR(m->obj);
    m->len = 0;
}
