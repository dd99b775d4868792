/* sockaddr.c -- struct sockaddr -> Python address, as socketmodule's
 * makesockaddr() builds it, for the families the transports meet:
 *   AF_INET  -> (host, port)
 *   AF_INET6 -> (host, port, flowinfo, scope_id)
 *   AF_UNIX  -> str path, or bytes for a Linux abstract name
 * Hosts come from getnameinfo(NI_NUMERICHOST), like socketmodule, so
 * scoped IPv6 addresses read the same ("fe80::1%eth0").  Any other family
 * returns NULL without an exception: callers then ask the socket object.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "aloop.h"

PyObject *
aloop_sockaddr_to_python(const struct sockaddr *sa, unsigned int len)
{
    char host[NI_MAXHOST];
    switch (sa->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (getnameinfo(sa, len, host, sizeof(host), NULL, 0,
                        NI_NUMERICHOST) != 0) {
            return NULL;
        }
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
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
