/* args.c -- binding the arguments of a vectorcall to the signature of the
 * stdlib method a C method replaces, as the interpreter binds them.
 *
 * The loop's C methods take what the stdlib's Python methods take:
 * positional-or-keyword parameters (loop.call_later(delay=1,
 * callback=f), loop.sock_recv(sock=s, n=10)), *args where the stdlib
 * has them, and one keyword-only parameter (context=).  A call that
 * Python would refuse fails with the interpreter's TypeError, named after
 * the stdlib's class (BaseEventLoop.call_later() missing 1 required
 * positional argument: 'delay').
 * Invariants: every value handed out is borrowed from the caller's
 * vector; nothing here allocates except the error message.
 */
#include "aloop.h"

/* "'a'", "'a' and 'b'", "'a', 'b', and 'c'": CPython's list of missing
 * parameters (ceval.c, format_missing). */
static PyObject *
args_name_list(const char *const *names, Py_ssize_t n)
{
    PyObject *s = PyUnicode_FromFormat("'%s'", names[0]);
    for (Py_ssize_t i = 1; s != NULL && i < n; i++) {
        const char *sep = i < n - 1 ? ", " : (n > 2 ? ", and " : " and ");
        Py_SETREF(s, PyUnicode_FromFormat("%U%s'%s'", s, sep, names[i]));
    }
    return s;
}

static int
args_too_many(const aloop_signature *sig, Py_ssize_t nargs)
{
    /* counted with self, as the interpreter does for a method */
    if (sig->required == sig->nparams) {
        PyErr_Format(PyExc_TypeError,
                     "%s.%s() takes %zd positional argument%s but %zd were "
                     "given",
                     sig->owner, sig->name, sig->nparams + 1,
                     sig->nparams ? "s" : "", nargs + 1);
    } else {
        PyErr_Format(PyExc_TypeError,
                     "%s.%s() takes from %zd to %zd positional arguments "
                     "but %zd were given",
                     sig->owner, sig->name, sig->required + 1,
                     sig->nparams + 1, nargs + 1);
    }
    return -1;
}

int
aloop_args_bind(const aloop_signature *sig, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, aloop_bound_args *out)
{
    Py_ssize_t npos = nargs < sig->nparams ? nargs : sig->nparams;
    for (Py_ssize_t i = 0; i < ALOOP_MAX_PARAMS; i++) {
        out->params[i] = i < npos ? args[i] : NULL;
    }
    out->rest = args + npos;
    out->nrest = nargs - npos;
    out->kwonly = NULL;
    ALOOP_ASSERT(sig->nparams <= ALOOP_MAX_PARAMS &&
                 sig->required <= sig->nparams);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        PyObject *value = args[nargs + k];
        if (sig->kwonly != NULL &&
            PyUnicode_CompareWithASCIIString(key, sig->kwonly) == 0) {
            out->kwonly = value;
            continue;
        }
        Py_ssize_t i = 0;
        while (i < sig->nparams &&
               PyUnicode_CompareWithASCIIString(key, sig->params[i]) != 0) {
            i++;
        }
        if (i == sig->nparams) {
            PyErr_Format(PyExc_TypeError,
                         "%s.%s() got an unexpected keyword argument '%U'",
                         sig->owner, sig->name, key);
            return -1;
        }
        if (out->params[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s.%s() got multiple values for argument '%s'",
                         sig->owner, sig->name, sig->params[i]);
            return -1;
        }
        out->params[i] = value;
    }
    /* after the keywords, as the interpreter checks them */
    if (out->nrest > 0 && !sig->varargs) {
        return args_too_many(sig, nargs);
    }
    const char *missing[ALOOP_MAX_PARAMS];
    Py_ssize_t nmissing = 0;
    for (Py_ssize_t i = 0; i < sig->required; i++) {
        if (out->params[i] == NULL) {
            missing[nmissing++] = sig->params[i];
        }
    }
    if (nmissing) {
        PyObject *list = args_name_list(missing, nmissing);
        if (list != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s.%s() missing %zd required positional "
                         "argument%s: %U",
                         sig->owner, sig->name, nmissing,
                         nmissing > 1 ? "s" : "", list);
            Py_DECREF(list);
        }
        return -1;
    }
    return 0;
}
