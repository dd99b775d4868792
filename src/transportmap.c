/* transportmap.c -- loop._transports: fd -> transport, holding weak
 * references, as the stdlib's weakref.WeakValueDictionary does.
 *
 * The stdlib reads it in _ensure_fd_no_transport, each transport adds
 * itself on creation, and _sendfile_native deletes and re-adds an entry.
 * A WeakValueDictionary costs a KeyedRef, a Python-level callback and
 * Python-level dict code per connection; this map stores a plain weak
 * reference (no callback) per key in a dict.  Invariants:
 *   - `refs` maps each key to a weakref; an entry whose referent died is
 *     "dead": every operation behaves as if it were absent (KeyError,
 *     not counted, not iterated) and drops it when it meets it;
 *   - dead entries are not purged eagerly: keys are fds, which the kernel
 *     reuses lowest-first, so the dict stays as large as the highest fd.
 * It is a mapping (len, [], in, iteration over keys, get, keys, values,
 * items, pop, clear), not a full WeakValueDictionary.
 */
#include "aloop.h"
#include "compat.h"

typedef struct {
    PyObject_HEAD PyObject *refs; /* owns: dict key -> weakref */
} TransportMapObj;

/* The live value for key (new reference), NULL without an exception if
 * absent or dead (a dead entry is dropped), NULL with one on error. */
static PyObject *
transportmap_lookup(TransportMapObj *m, PyObject *key)
{
    PyObject *ref = PyDict_GetItemWithError(m->refs, key); /* borrowed */
    if (ref == NULL) {
        return NULL;
    }
    PyObject *value = aloop_weakref_get(ref);
    if (value == NULL && PyDict_DelItem(m->refs, key) < 0) {
        return NULL;
    }
    return value;
}

/* Remove key and return its live value (new reference); if it is absent
 * or dead, return dflt (new reference) or, when dflt is NULL, raise
 * KeyError. */
static PyObject *
transportmap_pop(TransportMapObj *m, PyObject *key, PyObject *dflt)
{
    PyObject *value = transportmap_lookup(m, key);
    if (value != NULL) {
        if (PyDict_DelItem(m->refs, key) < 0) {
            Py_CLEAR(value);
        }
        return value;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (dflt != NULL) {
        return Py_NewRef(dflt);
    }
    PyErr_SetObject(PyExc_KeyError, key);
    return NULL;
}

PyObject *
aloop_transportmap_new(aloop_state *st)
{
    TransportMapObj *m =
        PyObject_GC_New(TransportMapObj, st->TransportMapType);
    if (m == NULL) {
        return NULL;
    }
    m->refs = PyDict_New();
    if (m->refs == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject_GC_Track(m);
    return (PyObject *)m;
}

int
aloop_transportmap_check(aloop_state *st, PyObject *obj)
{
    return Py_IS_TYPE(obj, st->TransportMapType);
}

PyObject *
aloop_transportmap_get(PyObject *map, PyObject *key)
{
    return transportmap_lookup((TransportMapObj *)map, key);
}

int
aloop_transportmap_set(PyObject *map, PyObject *key, PyObject *value)
{
    PyObject *ref = PyWeakref_NewRef(value, NULL);
    if (ref == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(((TransportMapObj *)map)->refs, key, ref);
    Py_DECREF(ref);
    return rc;
}

static Py_ssize_t
TransportMapObj_length(TransportMapObj *m)
{
    Py_ssize_t pos = 0, n = 0;
    PyObject *key, *ref;
    while (PyDict_Next(m->refs, &pos, &key, &ref)) {
        PyObject *value = aloop_weakref_get(ref);
        n += value != NULL;
        Py_XDECREF(value);
    }
    return n;
}

static PyObject *
TransportMapObj_subscript(TransportMapObj *m, PyObject *key)
{
    PyObject *value = transportmap_lookup(m, key);
    if (value == NULL && !PyErr_Occurred()) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return value;
}

static int
TransportMapObj_ass_subscript(TransportMapObj *m, PyObject *key,
                              PyObject *value)
{
    if (value != NULL) {
        return aloop_transportmap_set((PyObject *)m, key, value);
    }
    PyObject *old = transportmap_pop(m, key, NULL);
    Py_XDECREF(old);
    return old ? 0 : -1;
}

static int
TransportMapObj_contains(TransportMapObj *m, PyObject *key)
{
    PyObject *value = transportmap_lookup(m, key);
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(value);
    return 1;
}

/* A list of the live entries: keys, values or (key, value) pairs. */
enum { LIST_KEYS, LIST_VALUES, LIST_ITEMS };

static PyObject *
transportmap_list(TransportMapObj *m, int what)
{
    PyObject *list = PyList_New(0);
    Py_ssize_t pos = 0;
    PyObject *key, *ref;
    while (list != NULL && PyDict_Next(m->refs, &pos, &key, &ref)) {
        PyObject *value = aloop_weakref_get(ref);
        if (value == NULL) {
            continue;
        }
        PyObject *entry = what == LIST_KEYS     ? Py_NewRef(key)
                          : what == LIST_VALUES ? Py_NewRef(value)
                                                : PyTuple_Pack(2, key, value);
        Py_DECREF(value);
        if (entry == NULL || PyList_Append(list, entry) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(entry);
    }
    return list;
}

static PyObject *
TransportMapObj_iter(TransportMapObj *m)
{
    PyObject *keys = transportmap_list(m, LIST_KEYS);
    PyObject *it = keys ? PyObject_GetIter(keys) : NULL;
    Py_XDECREF(keys);
    return it;
}

static PyObject *
TransportMapObj_keys(TransportMapObj *m, PyObject *unused)
{
    return transportmap_list(m, LIST_KEYS);
}

static PyObject *
TransportMapObj_values(TransportMapObj *m, PyObject *unused)
{
    return transportmap_list(m, LIST_VALUES);
}

static PyObject *
TransportMapObj_items(TransportMapObj *m, PyObject *unused)
{
    return transportmap_list(m, LIST_ITEMS);
}

/* get(key, default=None) */
static PyObject *
TransportMapObj_get(TransportMapObj *m, PyObject *args)
{
    PyObject *key, *dflt = Py_None;
    if (!PyArg_UnpackTuple(args, "get", 1, 2, &key, &dflt)) {
        return NULL;
    }
    PyObject *value = transportmap_lookup(m, key);
    if (value == NULL && !PyErr_Occurred()) {
        value = Py_NewRef(dflt);
    }
    return value;
}

/* pop(key[, default]) */
static PyObject *
TransportMapObj_pop(TransportMapObj *m, PyObject *args)
{
    PyObject *key, *dflt = NULL;
    if (!PyArg_UnpackTuple(args, "pop", 1, 2, &key, &dflt)) {
        return NULL;
    }
    return transportmap_pop(m, key, dflt);
}

static PyObject *
TransportMapObj_clear_method(TransportMapObj *m, PyObject *unused)
{
    PyDict_Clear(m->refs);
    Py_RETURN_NONE;
}

static PyObject *
TransportMapObj_repr(TransportMapObj *m)
{
    return PyUnicode_FromFormat("<%s at %p>", Py_TYPE(m)->tp_name, m);
}

static int
TransportMapObj_traverse(TransportMapObj *m, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->refs);
    return 0;
}

static int
TransportMapObj_clear(TransportMapObj *m)
{
    Py_CLEAR(m->refs);
    return 0;
}

static void
TransportMapObj_dealloc(TransportMapObj *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    (void)TransportMapObj_clear(m);
    tp->tp_free(m);
    Py_DECREF(tp);
}

static PyMethodDef transportmap_methods[] = {
    {"get", (PyCFunction)TransportMapObj_get, METH_VARARGS, NULL},
    {"pop", (PyCFunction)TransportMapObj_pop, METH_VARARGS, NULL},
    {"keys", (PyCFunction)TransportMapObj_keys, METH_NOARGS, NULL},
    {"values", (PyCFunction)TransportMapObj_values, METH_NOARGS, NULL},
    {"items", (PyCFunction)TransportMapObj_items, METH_NOARGS, NULL},
    {"clear", (PyCFunction)TransportMapObj_clear_method, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot transportmap_slots[] = {
    {Py_tp_dealloc, TransportMapObj_dealloc},
    {Py_tp_traverse, TransportMapObj_traverse},
    {Py_tp_clear, TransportMapObj_clear},
    {Py_tp_repr, TransportMapObj_repr},
    {Py_tp_iter, TransportMapObj_iter},
    {Py_tp_methods, transportmap_methods},
    {Py_mp_length, TransportMapObj_length},
    {Py_mp_subscript, TransportMapObj_subscript},
    {Py_mp_ass_subscript, TransportMapObj_ass_subscript},
    {Py_sq_contains, TransportMapObj_contains},
    {0, NULL},
};

static PyType_Spec transportmap_spec = {
    .name = "aloop._core.TransportMap",
    .basicsize = sizeof(TransportMapObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = transportmap_slots,
};

int
aloop_transportmap_setup_types(PyObject *module, aloop_state *st)
{
    st->TransportMapType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &transportmap_spec, NULL);
    return st->TransportMapType ? 0 : -1;
}
