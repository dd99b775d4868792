/* compat.h -- small shims over CPython 3.11..3.13 API differences. */
#ifndef ALOOP_COMPAT_H
#define ALOOP_COMPAT_H

#include "aloop.h"

/* The raised exception as one object (traceback attached), error cleared. */
static inline PyObject *
aloop_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static inline void
aloop_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
#endif
}

static inline bool
aloop_error_is_fatal(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
           PyErr_ExceptionMatches(PyExc_SystemExit);
}

static inline int
aloop_is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* TypeError: data argument must be a bytes-like object, not 'name' */
static inline void
aloop_type_error_not_bytes(PyObject *data)
{
    PyObject *name = PyType_GetName(Py_TYPE(data));
    if (name != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "data argument must be a bytes-like object, not %R",
                     name);
        Py_DECREF(name);
    }
}

/* The referent of a weak reference (new reference), or NULL, with no
 * exception set, once it is dead. */
static inline PyObject *
aloop_weakref_get(PyObject *ref)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;
    (void)PyWeakref_GetRef(ref, &obj);
    return obj;
#else
    PyObject *obj = PyWeakref_GET_OBJECT(ref); /* borrowed */
    return obj == Py_None ? NULL : Py_NewRef(obj);
#endif
}

#endif /* ALOOP_COMPAT_H */
