/* timerheap.c -- binary min-heap of TimerHandles keyed by (when, seq).
 *
 * The heap owns one reference to each handle.  `seq` is unique per loop,
 * so the order is total and timers with equal deadlines fire in the order
 * they were scheduled.  Cancelled handles stay in the heap until they reach
 * the top or the loop compacts (BaseEventLoop._run_once's rule); the heap
 * itself never looks at `cancelled` except in compact().
 */
#include "aloop.h"

static inline bool
timer_less(const HandleObj *a, const HandleObj *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void
heap_sift_up(HandleObj **items, size_t pos)
{
    HandleObj *t = items[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!timer_less(t, items[parent])) {
            break;
        }
        items[pos] = items[parent];
        pos = parent;
    }
    items[pos] = t;
}

static void
heap_sift_down(HandleObj **items, size_t len, size_t pos)
{
    HandleObj *t = items[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= len) {
            break;
        }
        if (child + 1 < len && timer_less(items[child + 1], items[child])) {
            child++;
        }
        if (!timer_less(items[child], t)) {
            break;
        }
        items[pos] = items[child];
        pos = child;
    }
    items[pos] = t;
}

static int
heap_resize(aloop_timerheap *h, size_t ncap)
{
    HandleObj **n = PyMem_RawRealloc(h->items, ncap * sizeof(*n));
    if (n == NULL && ncap) {
        return -ENOMEM;
    }
    h->items = n;
    h->cap = ncap;
    return 0;
}

int
aloop_timerheap_push(aloop_timerheap *h, HandleObj *t)
{
    if (h->len == h->cap) {
        int rc = heap_resize(h, h->cap ? h->cap * 2 : 64);
        if (rc < 0) {
            return rc;
        }
    }
    h->items[h->len] = (HandleObj *)Py_NewRef(t);
    heap_sift_up(h->items, h->len++);
    return 0;
}

HandleObj *
aloop_timerheap_pop(aloop_timerheap *h)
{
    HandleObj *top = h->items[0];
    if (--h->len > 0) {
        h->items[0] = h->items[h->len];
        heap_sift_down(h->items, h->len, 0);
    }
    return top;
}

/* Return memory when the heap is much larger than what it holds. */
static void
heap_maybe_shrink(aloop_timerheap *h)
{
    if (h->cap > 1024 && h->len < h->cap / 4) {
        size_t ncap = h->len * 2 > 64 ? h->len * 2 : 64;
        (void)heap_resize(h, ncap); /* keeping the old block is fine */
    }
}

void
aloop_timerheap_compact(aloop_timerheap *h)
{
    size_t ndead = 0;
    for (size_t i = 0; i < h->len; i++) {
        ndead += h->items[i]->cancelled;
    }
    /* The dropped handles are released only after the heap is consistent
     * again: a decref may run Python code that schedules timers. */
    HandleObj **dead = PyMem_RawMalloc((ndead ? ndead : 1) * sizeof(*dead));
    if (dead == NULL) {
        return; /* compaction is an optimisation; try again later */
    }
    size_t kept = 0, nd = 0;
    for (size_t i = 0; i < h->len; i++) {
        HandleObj *t = h->items[i];
        if (t->cancelled) {
            t->scheduled = false;
            dead[nd++] = t;
        } else {
            h->items[kept++] = t;
        }
    }
    h->len = kept;
    for (size_t i = kept / 2; i-- > 0;) {
        heap_sift_down(h->items, kept, i);
    }
    heap_maybe_shrink(h);
    for (size_t i = 0; i < nd; i++) {
        Py_DECREF(dead[i]);
    }
    PyMem_RawFree(dead);
}

void
aloop_timerheap_clear(aloop_timerheap *h)
{
    HandleObj **items = h->items;
    size_t len = h->len;
    h->items = NULL;
    h->len = 0;
    h->cap = 0;
    for (size_t i = 0; i < len; i++) {
        Py_DECREF(items[i]);
    }
    PyMem_RawFree(items);
}

int
aloop_timerheap_traverse(aloop_timerheap *h, visitproc visit, void *arg)
{
    for (size_t i = 0; i < h->len; i++) {
        Py_VISIT(h->items[i]);
    }
    return 0;
}
