/* handle.c -- Handle and TimerHandle, the objects call_soon/call_later
 * return.
 *
 * Both are real subclasses of asyncio.Handle / asyncio.TimerHandle: the
 * object fields live in the stdlib's own __slots__ (HandleObj mirrors their
 * layout; handle_check_layout() proves it at import), so the inherited
 * Python methods (__repr__, _repr_info, __eq__, __lt__, __hash__...) read
 * the same data as the C code.  The flags and the deadline are C fields
 * behind getsets that shadow the stdlib's _cancelled/_scheduled/_when.
 * A handle owns a reference to its callback, args, context and loop until
 * it is cancelled (callback and args are then dropped, as in the stdlib).
 */
#include <stddef.h>

#include "aloop.h"
#include "compat.h"
#include "structmember.h"

static PyObject *
handle_copy_source_traceback(LoopObj *loop)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed: our caller */
    if (frame == NULL) {
        Py_RETURN_NONE;
    }
    return PyObject_CallOneArg(loop->state->extract_stack, (PyObject *)frame);
}

#define HANDLE_FREELIST_MAX 1024

/* Under AddressSanitizer a kept handle is poisoned but for its header and
 * the `callback` link, so a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define HANDLE_POISON(h, op)                                         \
    do {                                                             \
        op(&(h)->args, sizeof((h)->args));                           \
        op(&(h)->cancelled_slot,                                     \
           sizeof(HandleObj) - offsetof(HandleObj, cancelled_slot)); \
    } while (0)
#else
#define HANDLE_POISON(h, op) ((void)0)
#endif

static HandleObj *
handle_obj_alloc(aloop_state *st, PyTypeObject *tp)
{
    HandleObj *h = st->handle_freelist;
    if (h != NULL) {
        HANDLE_POISON(h, ASAN_UNPOISON_MEMORY_REGION);
        st->handle_freelist = (HandleObj *)h->callback;
        st->handle_freelist_len--;
        PyTypeObject *old = Py_TYPE(h);   /* the entry's own reference */
        PyObject_Init((PyObject *)h, tp); /* increfs tp */
        Py_DECREF(old);
        return h;
    }
    return PyObject_GC_New(HandleObj, tp);
}

/* Free the kept handles and keep no more (module teardown).  Each entry
 * owns a reference to its type: PyObject_GC_Del reads the type to find
 * the object's pre-header, so the type must outlive it. */
void
aloop_handle_freelist_clear(aloop_state *st)
{
    st->handle_freelist_closed = true;
    while (st->handle_freelist != NULL) {
        HandleObj *h = st->handle_freelist;
        HANDLE_POISON(h, ASAN_UNPOISON_MEMORY_REGION);
        st->handle_freelist = (HandleObj *)h->callback;
        PyTypeObject *tp = Py_TYPE(h);
        PyObject_GC_Del(h);
        Py_DECREF(tp);
    }
    st->handle_freelist_len = 0;
}

static HandleObj *
handle_alloc(PyTypeObject *tp, LoopObj *loop, PyObject *callback,
             PyObject *args, PyObject *context)
{
    HandleObj *h = handle_obj_alloc(loop->state, tp);
    if (h == NULL) {
        return NULL;
    }
    aloop_live_handles++;
    if (context == NULL || context == Py_None) {
        context = PyContext_CopyCurrent();
        if (context == NULL) {
            h->args = h->callback = h->context = h->loop = NULL;
            h->repr = h->source_traceback = NULL;
            h->cancelled_slot = h->scheduled_slot = h->when_slot = NULL;
#if PY_VERSION_HEX < 0x030C0000
            h->weakreflist = NULL;
#endif
            Py_DECREF(h);
            return NULL;
        }
    } else {
        Py_INCREF(context);
    }
    h->args = Py_NewRef(args);
    h->callback = Py_NewRef(callback);
    h->cancelled_slot = NULL;
    h->context = context;
    h->loop = Py_NewRef((PyObject *)loop);
    h->repr = Py_NewRef(Py_None);
    h->source_traceback = NULL;
#if PY_VERSION_HEX < 0x030C0000
    h->weakreflist = NULL;
#endif
    h->scheduled_slot = NULL;
    h->when_slot = NULL;
    h->when = 0.0;
    h->seq = 0;
    h->cancelled = false;
    h->scheduled = false;
    h->is_timer = false;
    if (loop->debug) {
        h->source_traceback = handle_copy_source_traceback(loop);
        if (h->source_traceback == NULL) {
            PyObject_GC_Track(h);
            Py_DECREF(h);
            return NULL;
        }
    } else {
        h->source_traceback = Py_NewRef(Py_None);
    }
    PyObject_GC_Track(h);
    return h;
}

HandleObj *
aloop_handle_new(LoopObj *loop, PyObject *callback, PyObject *args,
                 PyObject *context)
{
    return handle_alloc(loop->state->HandleType, loop, callback, args,
                        context);
}

HandleObj *
aloop_timerhandle_new(LoopObj *loop, double when, PyObject *callback,
                      PyObject *args, PyObject *context)
{
    HandleObj *h = handle_alloc(loop->state->TimerHandleType, loop, callback,
                                args, context);
    if (h != NULL) {
        h->is_timer = true;
        h->when = when;
        h->seq = loop->timer_seq++;
    }
    return h;
}

/* The loop of a handle we created is always an aloop loop; _loop is a
 * writable slot, so check before trusting it. */
static LoopObj *
handle_aloop_loop(HandleObj *h, aloop_state *st)
{
    if (h->loop != NULL && PyObject_TypeCheck(h->loop, st->LoopType)) {
        return (LoopObj *)h->loop;
    }
    return NULL;
}

/* Handle types are final, so the type's own module state is ours. */
static aloop_state *
handle_state(HandleObj *h)
{
    return (aloop_state *)PyType_GetModuleState(Py_TYPE(h));
}

int
aloop_handle_cancel(HandleObj *h)
{
    if (h->cancelled) {
        return 0;
    }
    aloop_state *st = handle_state(h);
    LoopObj *loop = handle_aloop_loop(h, st);
    if (h->is_timer && loop != NULL) {
        /* self._loop._timer_handle_cancelled(self), as the stdlib's cancel()
         * calls it, when a subclass overrides it */
        int overridden = aloop_loop_overrides(
            loop, ALOOP_HOOK(ALOOP_HOOK_TIMER_HANDLE_CANCELLED));
        if (overridden < 0) {
            return -1;
        }
        if (overridden) {
            PyObject *r = PyObject_CallMethod(
                (PyObject *)loop, "_timer_handle_cancelled", "(O)", h);
            Py_XDECREF(r);
            if (r == NULL) {
                return -1;
            }
        } else if (h->scheduled) {
            loop->timer_cancelled_count++;
        }
    }
    h->cancelled = true;
    bool debug;
    if (loop != NULL) {
        debug = loop->debug;
    } else {
        PyObject *r = PyObject_CallMethod(h->loop, "get_debug", NULL);
        if (r == NULL) {
            return -1;
        }
        debug = PyObject_IsTrue(r) > 0;
        Py_DECREF(r);
    }
    if (debug) {
        PyObject *repr = PyObject_Repr((PyObject *)h);
        if (repr == NULL) {
            return -1;
        }
        Py_SETREF(h->repr, repr);
    }
    PyObject *cb = h->callback, *args = h->args;
    h->callback = Py_NewRef(Py_None);
    h->args = Py_NewRef(Py_None);
    Py_XDECREF(cb); /* may run arbitrary code: fields are consistent */
    Py_XDECREF(args);
    return 0;
}

/* Build the stdlib's context dict and hand it to call_exception_handler. */
static int
handle_report(HandleObj *h, PyObject *exc)
{
    aloop_state *st = handle_state(h);
    LoopObj *loop = handle_aloop_loop(h, st);
    PyObject *cb, *msg = NULL, *ctx = NULL;
    PyObject *cbobj = h->callback ? h->callback : Py_None;
    PyObject *argsobj = h->args ? h->args : Py_None;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *fargs[3] = {cbobj, argsobj,
                          (loop && loop->debug) ? Py_True : Py_False};
    PyObject *kw = PyTuple_Pack(1, st->str_debug);
    if (kw == NULL) {
        return -1;
    }
    cb = PyObject_Vectorcall(st->format_callback_source, fargs, 2, kw);
    Py_DECREF(kw);
#else
    (void)loop;
    cb = PyObject_CallFunctionObjArgs(st->format_callback_source, cbobj,
                                      argsobj, NULL);
#endif
    if (cb == NULL) {
        return -1;
    }
    msg = PyUnicode_FromFormat("Exception in callback %U", cb);
    Py_DECREF(cb);
    if (msg == NULL) {
        return -1;
    }
    ctx = PyDict_New();
    if (ctx == NULL || PyDict_SetItem(ctx, st->str_message, msg) < 0 ||
        PyDict_SetItem(ctx, st->str_exception, exc) < 0 ||
        PyDict_SetItem(ctx, st->str_handle, (PyObject *)h) < 0) {
        goto error;
    }
    if (h->source_traceback != NULL) {
        int truth = PyObject_IsTrue(h->source_traceback);
        if (truth < 0 ||
            (truth && PyDict_SetItem(ctx, st->str_source_traceback,
                                     h->source_traceback) < 0)) {
            goto error;
        }
    }
    PyObject *loopobj = h->loop ? h->loop : Py_None;
    if (aloop_call_exception_handler(st, loopobj, ctx) < 0) {
        goto error;
    }
    Py_DECREF(msg);
    Py_DECREF(ctx);
    return 0;
error:
    Py_XDECREF(msg);
    Py_XDECREF(ctx);
    return -1;
}

static PyObject *
handle_call(PyObject *cb, PyObject *args)
{
    if (PyTuple_CheckExact(args)) {
        return PyObject_Vectorcall(cb, ((PyTupleObject *)args)->ob_item,
                                   PyTuple_GET_SIZE(args), NULL);
    }
    /* _args replaced by the user: cb(*args) takes any iterable */
    if (Py_TYPE(args)->tp_iter == NULL && !PySequence_Check(args)) {
        return PyErr_Format(PyExc_TypeError,
                            "Value after * must be an iterable, not %.200s",
                            Py_TYPE(args)->tp_name);
    }
    PyObject *tuple = PySequence_Tuple(args);
    PyObject *r = tuple ? PyObject_Call(cb, tuple, NULL) : NULL;
    Py_XDECREF(tuple);
    return r;
}

/* A slot the stdlib's _run reads was deleted (del handle._callback):
 * its AttributeError. */
static void
handle_missing_slot(HandleObj *h, const char *name)
{
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                 Py_TYPE(h)->tp_name, name);
}

int
aloop_handle_run(HandleObj *h)
{
    if (h->callback == NULL || h->args == NULL) {
        /* _run's own error handler reads them too: the error escapes */
        handle_missing_slot(h, h->callback == NULL ? "_callback" : "_args");
        return -1;
    }
    if (h->context == NULL) {
        handle_missing_slot(h, "_context");
        return aloop_handle_report_current(h);
    }
    /* Beware: the callback may cancel its own handle, dropping these. */
    PyObject *cb = Py_NewRef(h->callback);
    PyObject *args = Py_NewRef(h->args);
    PyObject *ctx = Py_NewRef(h->context);
    PyObject *res;
    if (PyContext_CheckExact(ctx)) {
        if (PyContext_Enter(ctx) < 0) {
            res = NULL;
        } else {
            res = handle_call(cb, args);
            if (PyContext_Exit(ctx) < 0) {
                Py_CLEAR(res);
            }
        }
    } else {
        PyObject *callargs = PySequence_Tuple(args);
        res = NULL;
        if (callargs != NULL) {
            PyObject *run = PyObject_GetAttrString(ctx, "run");
            if (run != NULL) {
                PyObject *full = PyTuple_New(PyTuple_GET_SIZE(callargs) + 1);
                if (full != NULL) {
                    PyTuple_SET_ITEM(full, 0, Py_NewRef(cb));
                    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(callargs);
                         i++) {
                        PyTuple_SET_ITEM(
                            full, i + 1,
                            Py_NewRef(PyTuple_GET_ITEM(callargs, i)));
                    }
                    res = PyObject_Call(run, full, NULL);
                    Py_DECREF(full);
                }
                Py_DECREF(run);
            }
            Py_DECREF(callargs);
        }
    }
    Py_DECREF(cb);
    Py_DECREF(args);
    Py_DECREF(ctx);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    return aloop_handle_report_current(h);
}

int
aloop_handle_report_current(HandleObj *h)
{
    if (aloop_error_is_fatal()) {
        return -1;
    }
    PyObject *exc = aloop_fetch_exception();
    int rc = handle_report(h, exc);
    Py_DECREF(exc);
    return rc;
}

/* ---------------------------------------------------------- Python methods */

static PyObject *
HandleObj_cancel(HandleObj *self, PyObject *Py_UNUSED(ignored))
{
    if (aloop_handle_cancel(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
HandleObj_cancelled(HandleObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->cancelled);
}

static PyObject *
HandleObj_get_context(HandleObj *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->context ? self->context : Py_None);
}

static PyObject *
HandleObj__run(HandleObj *self, PyObject *Py_UNUSED(ignored))
{
    if (aloop_handle_run(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
HandleObj_when(HandleObj *self, PyObject *Py_UNUSED(ignored))
{
    /* call_at(when) keeps a `when` that is not a float as it was given */
    if (self->when_slot != NULL) {
        return Py_NewRef(self->when_slot);
    }
    return PyFloat_FromDouble(self->when);
}

static PyObject *
HandleObj_get_cancelled(HandleObj *self, void *closure)
{
    return PyBool_FromLong(self->cancelled);
}

static int
HandleObj_set_cancelled(HandleObj *self, PyObject *value, void *closure)
{
    int truth = value ? PyObject_IsTrue(value) : 0;
    if (truth < 0) {
        return -1;
    }
    self->cancelled = truth;
    return 0;
}

static PyObject *
HandleObj_get_scheduled(HandleObj *self, void *closure)
{
    return PyBool_FromLong(self->scheduled);
}

static int
HandleObj_set_scheduled(HandleObj *self, PyObject *value, void *closure)
{
    int truth = value ? PyObject_IsTrue(value) : 0;
    if (truth < 0) {
        return -1;
    }
    self->scheduled = truth;
    return 0;
}

static PyObject *
HandleObj_get_when(HandleObj *self, void *closure)
{
    return HandleObj_when(self, NULL);
}

static int
HandleObj_set_when(HandleObj *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _when");
        return -1;
    }
    double when = PyFloat_AsDouble(value);
    if (when == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->when = when;
    Py_XSETREF(self->when_slot,
               PyFloat_CheckExact(value) ? NULL : Py_NewRef(value));
    return 0;
}

static int
HandleObj_traverse(HandleObj *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->args);
    Py_VISIT(self->callback);
    Py_VISIT(self->cancelled_slot);
    Py_VISIT(self->context);
    Py_VISIT(self->loop);
    Py_VISIT(self->repr);
    Py_VISIT(self->source_traceback);
    Py_VISIT(self->scheduled_slot);
    Py_VISIT(self->when_slot);
    return 0;
}

static int
HandleObj_clear(HandleObj *self)
{
    Py_CLEAR(self->args);
    Py_CLEAR(self->callback);
    Py_CLEAR(self->cancelled_slot);
    Py_CLEAR(self->context);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->repr);
    Py_CLEAR(self->source_traceback);
    Py_CLEAR(self->scheduled_slot);
    Py_CLEAR(self->when_slot);
    return 0;
}

static void
HandleObj_dealloc(HandleObj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
#if PY_VERSION_HEX < 0x030C0000
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
#else
    PyObject_ClearWeakRefs((PyObject *)self);
#endif
    (void)HandleObj_clear(self);
    aloop_live_handles--;
    /* No state once the GC cleared the type's module at interpreter exit
     * (read ht_module: PyType_GetModuleState would raise). */
    PyObject *mod = ((PyHeapTypeObject *)tp)->ht_module;
    aloop_state *st = mod ? (aloop_state *)PyModule_GetState(mod) : NULL;
    if (st != NULL && st->handle_freelist_len < HANDLE_FREELIST_MAX &&
        !st->handle_freelist_closed) {
        self->callback = (PyObject *)st->handle_freelist;
        st->handle_freelist = self;
        st->handle_freelist_len++;
        HANDLE_POISON(self, ASAN_POISON_MEMORY_REGION);
        return; /* the entry keeps its reference to tp */
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef HandleObj_methods[] = {
    {"cancel", (PyCFunction)HandleObj_cancel, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)HandleObj_cancelled, METH_NOARGS, NULL},
    {"get_context", (PyCFunction)HandleObj_get_context, METH_NOARGS, NULL},
    {"_run", (PyCFunction)HandleObj__run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef HandleObj_getset[] = {
    {"_cancelled", (getter)HandleObj_get_cancelled,
     (setter)HandleObj_set_cancelled, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef TimerHandleObj_methods[] = {
    {"when", (PyCFunction)HandleObj_when, METH_NOARGS, NULL},
    {"cancel", (PyCFunction)HandleObj_cancel, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)HandleObj_cancelled, METH_NOARGS, NULL},
    {"get_context", (PyCFunction)HandleObj_get_context, METH_NOARGS, NULL},
    {"_run", (PyCFunction)HandleObj__run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TimerHandleObj_getset[] = {
    {"_cancelled", (getter)HandleObj_get_cancelled,
     (setter)HandleObj_set_cancelled, NULL, NULL},
    {"_scheduled", (getter)HandleObj_get_scheduled,
     (setter)HandleObj_set_scheduled, NULL, NULL},
    {"_when", (getter)HandleObj_get_when, (setter)HandleObj_set_when, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_dealloc, HandleObj_dealloc}, {Py_tp_traverse, HandleObj_traverse},
    {Py_tp_clear, HandleObj_clear},     {Py_tp_methods, HandleObj_methods},
    {Py_tp_getset, HandleObj_getset},   {0, NULL},
};

static PyType_Slot timerhandle_slots[] = {
    {Py_tp_dealloc, HandleObj_dealloc},
    {Py_tp_traverse, HandleObj_traverse},
    {Py_tp_clear, HandleObj_clear},
    {Py_tp_methods, TimerHandleObj_methods},
    {Py_tp_getset, TimerHandleObj_getset},
    {0, NULL},
};

/* Not Py_TPFLAGS_IMMUTABLETYPE: the stdlib bases are mutable, and an
 * immutable subclass of a mutable type is deprecated since 3.12. */
#define HANDLE_FLAGS                           \
    (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | \
     Py_TPFLAGS_DISALLOW_INSTANTIATION)

static PyType_Spec handle_spec = {
    .name = "aloop._core.Handle",
    .basicsize = sizeof(HandleObj),
    .flags = HANDLE_FLAGS,
    .slots = handle_slots,
};

static PyType_Spec timerhandle_spec = {
    .name = "aloop._core.TimerHandle",
    .basicsize = sizeof(HandleObj),
    .flags = HANDLE_FLAGS,
    .slots = timerhandle_slots,
};

/* Offset of the member descriptor `name` of `base`, or -1. */
static Py_ssize_t
handle_slot_offset(PyTypeObject *base, const char *name)
{
    PyObject *d = PyDict_GetItemString(base->tp_dict, name); /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

/* Our struct must match the stdlib's slot layout exactly. */
static int
handle_check_layout(PyTypeObject *handle, PyTypeObject *timer)
{
    static const struct {
        const char *name;
        Py_ssize_t offset;
        bool timer;
    } expect[] = {
        {"_args", offsetof(HandleObj, args), false},
        {"_callback", offsetof(HandleObj, callback), false},
        {"_cancelled", offsetof(HandleObj, cancelled_slot), false},
        {"_context", offsetof(HandleObj, context), false},
        {"_loop", offsetof(HandleObj, loop), false},
        {"_repr", offsetof(HandleObj, repr), false},
        {"_source_traceback", offsetof(HandleObj, source_traceback), false},
        {"_scheduled", offsetof(HandleObj, scheduled_slot), true},
        {"_when", offsetof(HandleObj, when_slot), true},
    };
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        Py_ssize_t off = handle_slot_offset(expect[i].timer ? timer : handle,
                                            expect[i].name);
        if (off != expect[i].offset) {
            PyErr_Format(PyExc_ImportError,
                         "aloop: asyncio.%s.%s is at offset %zd, expected "
                         "%zd; this Python's asyncio is not supported",
                         expect[i].timer ? "TimerHandle" : "Handle",
                         expect[i].name, off, expect[i].offset);
            return -1;
        }
    }
    if (timer->tp_basicsize != (Py_ssize_t)offsetof(HandleObj, when)) {
        PyErr_SetString(PyExc_ImportError,
                        "aloop: unexpected asyncio.TimerHandle size");
        return -1;
    }
    return 0;
}

int
aloop_handle_setup_types(PyObject *module, aloop_state *st)
{
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (events == NULL) {
        return -1;
    }
    PyObject *base_handle = PyObject_GetAttrString(events, "Handle");
    PyObject *base_timer = PyObject_GetAttrString(events, "TimerHandle");
    Py_DECREF(events);
    int rc = -1;
    if (base_handle == NULL || base_timer == NULL ||
        !PyType_Check(base_handle) || !PyType_Check(base_timer)) {
        goto done;
    }
    if (handle_check_layout((PyTypeObject *)base_handle,
                            (PyTypeObject *)base_timer) < 0) {
        goto done;
    }
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &handle_spec, base_handle);
    if (st->HandleType == NULL) {
        goto done;
    }
    st->TimerHandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &timerhandle_spec, base_timer);
    if (st->TimerHandleType == NULL) {
        goto done;
    }
    if (PyModule_AddObjectRef(module, "Handle", (PyObject *)st->HandleType) <
            0 ||
        PyModule_AddObjectRef(module, "TimerHandle",
                              (PyObject *)st->TimerHandleType) < 0) {
        goto done;
    }
    rc = 0;
done:
    Py_XDECREF(base_handle);
    Py_XDECREF(base_timer);
    return rc;
}
