/* loopclass.c -- loop subclasses that override a method the C fast paths
 * bypass.
 *
 * The stdlib's code calls its own methods through self: the scheduler
 * reads self.time(), sock_recv & co wait on self.create_future(), the
 * accept loop runs self._accept_connection, self._accept_connection2 and
 * self._make_socket_transport, run_forever runs self._run_once (and
 * on 3.13 self._run_forever_setup/_cleanup, which exist for loop
 * subclasses to reuse), call_later calls self.call_at and
 * TimerHandle.cancel() self._loop._timer_handle_cancelled.  aloop's C paths do
 * the same work without those calls.  When a subclass (or an instance
 * attribute, as mock.patch.object sets) replaces one of them, the C paths call
 * it, or hand over to the stdlib's code, so the override is honoured as on
 * stock asyncio.
 *
 * Invariants: the answer for the class is cached per loop and recomputed
 * when the type's version tag changes (any assignment to the class or a
 * base changes it) or when there is no tag; instance attributes are
 * tracked by the loop's __setattr__; an attribute neither the loop nor
 * its bases define counts as not overridden.
 */
#include "aloop.h"

static const char *const hook_names[ALOOP_HOOK_COUNT] = {
    [ALOOP_HOOK_TIME] = "time",
    [ALOOP_HOOK_CREATE_FUTURE] = "create_future",
    [ALOOP_HOOK_ACCEPT_CONNECTION] = "_accept_connection",
    [ALOOP_HOOK_ACCEPT_CONNECTION2] = "_accept_connection2",
    [ALOOP_HOOK_MAKE_SOCKET_TRANSPORT] = "_make_socket_transport",
    [ALOOP_HOOK_RUN_ONCE] = "_run_once",
    [ALOOP_HOOK_CALL_AT] = "call_at",
    [ALOOP_HOOK_TIMER_HANDLE_CANCELLED] = "_timer_handle_cancelled",
#if PY_VERSION_HEX >= 0x030D0000
    [ALOOP_HOOK_RUN_FOREVER_SETUP] = "_run_forever_setup",
    [ALOOP_HOOK_RUN_FOREVER_CLEANUP] = "_run_forever_cleanup",
#endif
};

/* Which hooks the class of `loop` overrides, as a mask; -1 on error. */
static long
loop_class_overrides(LoopObj *loop)
{
    aloop_state *st = loop->state;
    long mask = 0;
    for (int h = 0; h < ALOOP_HOOK_COUNT; h++) {
        PyObject *m = PyObject_GetAttr((PyObject *)Py_TYPE(loop),
                                       PyTuple_GET_ITEM(st->hook_names, h));
        if (m == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return -1;
            }
            PyErr_Clear();
        } else if (m != PyTuple_GET_ITEM(st->hook_defaults, h)) {
            mask |= ALOOP_HOOK(h);
        }
        Py_XDECREF(m);
    }
    return mask;
}

/* The class changed (or has no version tag): ask it again. */
int
aloop_loop_overrides_recheck(LoopObj *loop, unsigned int hooks)
{
    long mask = loop_class_overrides(loop);
    if (mask < 0) {
        return -1;
    }
    loop->class_hooks = (unsigned int)mask;
    loop->class_tag = Py_TYPE(loop)->tp_version_tag;
    return ((loop->class_hooks | loop->attr_hooks) & hooks) != 0;
}

void
aloop_loop_note_setattr(LoopObj *loop, PyObject *name, bool set)
{
    if (!PyUnicode_Check(name)) {
        return;
    }
    PyObject *names = loop->state->hook_names;
    for (int h = 0; h < ALOOP_HOOK_COUNT; h++) {
        if (PyUnicode_Compare(name, PyTuple_GET_ITEM(names, h)) == 0) {
            if (set) {
                loop->attr_hooks |= ALOOP_HOOK(h);
            } else {
                loop->attr_hooks &= ~ALOOP_HOOK(h);
            }
        }
    }
}

int
aloop_loopclass_setup(aloop_state *st)
{
    PyObject *base =
        PyObject_GetAttrString(st->selector_events, "BaseSelectorEventLoop");
    st->hook_names = PyTuple_New(ALOOP_HOOK_COUNT);
    st->hook_defaults = PyTuple_New(ALOOP_HOOK_COUNT);
    if (base == NULL || st->hook_names == NULL || st->hook_defaults == NULL) {
        Py_XDECREF(base);
        return -1;
    }
    for (int h = 0; h < ALOOP_HOOK_COUNT; h++) {
        PyObject *name = PyUnicode_InternFromString(hook_names[h]);
        if (name == NULL) {
            Py_DECREF(base);
            return -1;
        }
        PyTuple_SET_ITEM(st->hook_names, h, name);
        /* aloop.Loop's attribute: the C type's, else the stdlib's */
        PyObject *dflt = PyObject_GetAttr((PyObject *)st->LoopType, name);
        if (dflt == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            dflt = PyObject_GetAttr(base, name);
        }
        if (dflt == NULL) {
            Py_DECREF(base);
            return -1;
        }
        PyTuple_SET_ITEM(st->hook_defaults, h, dflt);
    }
    Py_DECREF(base);
    return 0;
}
