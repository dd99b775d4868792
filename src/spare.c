/* spare.c -- the loop's spare bytes object, so that a read handed to a
 * protocol callback that did not keep it costs no malloc/free.
 *
 * A transport's read becomes a bytes object passed to data_received() or
 * datagram_received().  Most protocols copy what they need (a stream's
 * buffer, a parser) or write the data back, and drop it: when the
 * callback returns, the transport holds the only reference.  Such an
 * object goes back to the loop as its spare and carries the next read of
 * the same allocation size.  For 1 KiB echo that is a fifth of aloop's
 * user-space instructions per request (a 1057-byte object is over glibc's
 * tcache limit, so each malloc/free pair takes the slow bins).
 * Invariants:
 *   - `loop->spare` is NULL or an exact bytes object that only the loop
 *     references (refcount 1), made by aloop_spare_bytes() and given back
 *     by aloop_spare_release(); the loop owns it and drops it on close;
 *   - a reused object is only ever shrunk (ob_size <= the size it was
 *     allocated with), and only within its 16-byte allocation class, so
 *     it is indistinguishable from a fresh one: same content, size,
 *     getsizeof(), a NUL after the data, and no cached hash.
 */
#include <string.h>

#include "aloop.h"

/* Allocation classes: pymalloc and glibc both hand out 16-byte multiples. */
#define SPARE_CLASS(n) ((offsetof(PyBytesObject, ob_sval) + 1 + (n) + 15) / 16)

static void
spare_reset_hash(PyObject *b)
{
    /* ob_shash is deprecated API, but CPython 3.11-3.13 still read it as
     * the hash cache: -1 means "not computed" (what _PyBytes_Resize
     * sets). */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    ((PyBytesObject *)b)->ob_shash = -1;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
}

PyObject *
aloop_spare_bytes(LoopObj *loop, const char *buf, Py_ssize_t n)
{
    PyObject *b = loop->spare;
    if (b != NULL && n > 1 && n <= Py_SIZE(b) &&
        SPARE_CLASS(n) == SPARE_CLASS(Py_SIZE(b))) {
        loop->spare = NULL;
        Py_SET_SIZE(b, n);
        spare_reset_hash(b);
        memcpy(PyBytes_AS_STRING(b), buf, (size_t)n);
        PyBytes_AS_STRING(b)[n] = '\0';
        return b;
    }
    /* NULL source: a fresh object even for one byte (no shared singleton) */
    b = PyBytes_FromStringAndSize(NULL, n);
    if (b != NULL) {
        memcpy(PyBytes_AS_STRING(b), buf, (size_t)n);
    }
    return b;
}

void
aloop_spare_release(LoopObj *loop, PyObject *data)
{
    /* the newest one: the next read is likelier to have its size */
    if (Py_REFCNT(data) == 1 && Py_SIZE(data) > 1) {
        Py_XSETREF(loop->spare, data);
        return;
    }
    Py_DECREF(data);
}
