/* spare.c -- the loop's spare bytes object: a read handed to a protocol
 * callback that did not keep it costs no malloc/free.
 *
 * Most protocols copy or echo what data_received()/datagram_received()
 * gets and drop it, so when the callback returns the transport holds the
 * only reference.  That object becomes the loop's spare and carries the
 * next read of the same allocation size (1 KiB echo: a fifth of the
 * user-space instructions per request; a 1057-byte object is over glibc's
 * tcache limit).
 * Invariants: `loop->spare` is NULL or an exact bytes object made by
 * aloop_spare_bytes() that only the loop references; a reused object is
 * only shrunk, within its 16-byte allocation class, with its hash cache
 * reset, so it is indistinguishable from a new one (size, getsizeof(),
 * NUL terminator, hash); a closed loop keeps none.
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
    if (Py_REFCNT(data) == 1 && Py_SIZE(data) > 1 && !loop->closed) {
        Py_XSETREF(loop->spare, data);
        return;
    }
    Py_DECREF(data);
}
