/* readyq.c -- the loop's ready queue: a growable ring buffer.
 *
 * Invariants: cap is 0 or a power of two; entries [head, head+len) modulo
 * cap are live; the queue owns one reference to each entry's obj (NULL is
 * allowed for internal events owned by the loop itself).  Pushing and
 * popping never call into Python, so the queue is consistent whenever the
 * GIL is released or Python code runs.
 */
#include "aloop.h"

static int
readyq_grow(aloop_readyq *q)
{
    size_t ncap = q->cap ? q->cap * 2 : 64;
    aloop_ready_entry *nbuf = PyMem_RawMalloc(ncap * sizeof(*nbuf));
    if (nbuf == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < q->len; i++) {
        nbuf[i] = q->buf[(q->head + i) & (q->cap - 1)];
    }
    PyMem_RawFree(q->buf);
    q->buf = nbuf;
    q->cap = ncap;
    q->head = 0;
    return 0;
}

int
aloop_readyq_push(aloop_readyq *q, PyObject *obj, aloop_event_fn fn,
                  uint32_t events)
{
    if (q->len == q->cap) {
        int rc = readyq_grow(q);
        if (rc < 0) {
            return rc;
        }
    }
    aloop_ready_entry *e = &q->buf[(q->head + q->len) & (q->cap - 1)];
    e->obj = Py_XNewRef(obj);
    e->fn = fn;
    e->events = events;
    q->len++;
    return 0;
}

/* Give memory back after a burst (e.g. 100k tasks): only when empty. */
void
aloop_readyq_shrink(aloop_readyq *q)
{
    if (q->len == 0 && q->cap > 4096) {
        PyMem_RawFree(q->buf);
        q->buf = NULL;
        q->cap = 0;
        q->head = 0;
    }
}

void
aloop_readyq_clear(aloop_readyq *q)
{
    /* Pop before decref: a finalizer may push to the queue. */
    while (q->len) {
        aloop_ready_entry e = aloop_readyq_pop(q);
        Py_XDECREF(e.obj);
    }
}

void
aloop_readyq_free(aloop_readyq *q)
{
    aloop_readyq_clear(q);
    PyMem_RawFree(q->buf);
    q->buf = NULL;
    q->cap = 0;
    q->head = 0;
}

int
aloop_readyq_traverse(aloop_readyq *q, visitproc visit, void *arg)
{
    for (size_t i = 0; i < q->len; i++) {
        Py_VISIT(q->buf[(q->head + i) & (q->cap - 1)].obj);
    }
    return 0;
}
