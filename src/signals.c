/* signals.c -- add_signal_handler / remove_signal_handler and the signal
 * wakeup socketpair.
 *
 * Python's own C-level handler writes the signal number to the fd given to
 * signal.set_wakeup_fd: the write end of a non-blocking socketpair created
 * on first use.  The read end is an internal watcher in the fd table; when
 * readable, each byte's handler Handle joins the ready queue (so handlers
 * run as ordinary loop callbacks, one iteration later, as in the stdlib).
 * _signal_handlers (dict signum -> Handle) is the stdlib's attribute.
 * Checks, messages and the order of the signal module calls are
 * unix_events._UnixSelectorEventLoop's, and like it the code calls the
 * `signal` and `sys` modules it finds in asyncio.unix_events at the time
 * of the call (CPython's tests replace them with mocks there).
 */
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aloop.h"
#include "compat.h"

/* unix_events.<module>.<name> */
static PyObject *
signals_lookup(LoopObj *loop, const char *module, const char *name)
{
    PyObject *mod = PyObject_GetAttrString(loop->state->unix_events, module);
    PyObject *r = mod ? PyObject_GetAttrString(mod, name) : NULL;
    Py_XDECREF(mod);
    return r;
}

/* signal.<name>(*args) */
static PyObject *
signals_call(LoopObj *loop, const char *name, const char *fmt, ...)
{
    PyObject *func = signals_lookup(loop, "signal", name);
    if (func == NULL) {
        return NULL;
    }
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *r = args ? PyObject_Call(func, args, NULL) : NULL;
    Py_XDECREF(args);
    Py_DECREF(func);
    return r;
}

/* _check_signal: TypeError for a non-int, ValueError for an invalid one. */
static int
signals_check(LoopObj *loop, PyObject *sig)
{
    if (!PyLong_Check(sig)) {
        PyErr_Format(PyExc_TypeError, "sig must be an int, not %R", sig);
        return -1;
    }
    PyObject *valid = signals_call(loop, "valid_signals", "()");
    int ok = valid ? PySequence_Contains(valid, sig) : -1;
    Py_XDECREF(valid);
    if (ok < 0) {
        return -1;
    }
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "invalid signal number %S", sig);
        return -1;
    }
    return 0;
}

/* Turn OSError(EINVAL) from signal.signal into the stdlib's RuntimeError. */
static void
signals_translate_einval(PyObject *sig)
{
    if (!PyErr_ExceptionMatches(PyExc_OSError)) {
        return;
    }
    PyObject *exc = aloop_fetch_exception();
    PyObject *eno = PyObject_GetAttrString(exc, "errno");
    long e = (eno && PyLong_Check(eno)) ? PyLong_AsLong(eno) : 0;
    Py_XDECREF(eno);
    PyErr_Clear();
    if (e == EINVAL) {
        Py_DECREF(exc);
        PyErr_Format(PyExc_RuntimeError, "sig %S cannot be caught", sig);
    } else {
        aloop_restore_exception(exc);
    }
}

static void
signals_clear_wakeup_fd(LoopObj *loop)
{
    PyObject *r = signals_call(loop, "set_wakeup_fd", "(i)", -1);
    if (r != NULL) {
        Py_DECREF(r);
        return;
    }
    if (PyErr_ExceptionMatches(PyExc_ValueError) ||
        PyErr_ExceptionMatches(PyExc_OSError)) {
        PyObject *exc = aloop_fetch_exception();
        (void)aloop_log(loop->state->unix_events, "info",
                        "set_wakeup_fd(-1) failed: %s", exc);
        Py_DECREF(exc);
        PyErr_Clear();
    }
}

static int
signals_handle_one(LoopObj *loop, int signum)
{
    PyObject *key = PyLong_FromLong(signum);
    if (key == NULL) {
        return -1;
    }
    PyObject *handle = PyDict_GetItemWithError(loop->signal_handlers, key);
    if (handle == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0; /* assume a race, as the stdlib */
    }
    Py_INCREF(handle);
    int cancelled;
    if (Py_IS_TYPE(handle, loop->state->HandleType)) {
        cancelled = ((HandleObj *)handle)->cancelled;
    } else {
        PyObject *c =
            PyObject_GetAttr(handle, loop->state->str_cancelled_attr);
        cancelled = c ? PyObject_IsTrue(c) : -1;
        Py_XDECREF(c);
    }
    int rc = cancelled;
    if (cancelled > 0) {
        PyObject *r = PyObject_CallMethod((PyObject *)loop,
                                          "remove_signal_handler", "(O)", key);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    } else if (cancelled == 0) {
        rc = aloop_loop_push_handle(loop, handle);
    }
    Py_DECREF(handle);
    Py_DECREF(key);
    return rc;
}

/* Internal watcher of the socketpair's read end. */
static int
signals_read_ready(LoopObj *loop, PyObject *owner, uint32_t events)
{
    unsigned char buf[4096];
    for (;;) {
        ssize_t n = recv(loop->sig_rfd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return 0; /* EAGAIN: drained */
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] && signals_handle_one(loop, buf[i]) < 0) {
                if (aloop_loop_report_exception(
                        loop, "Exception in signal wakeup handler") < 0) {
                    return -1;
                }
            }
        }
    }
}

static int
signals_ensure_pair(LoopObj *loop)
{
    if (loop->sig_rfd >= 0) {
        return 0;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    PyObject *old = NULL;
    int rc = aloop_loop_set_watcher(loop, sv[0], ALOOP_READ, NULL,
                                    signals_read_ready, &old);
    if (rc < 0) {
        close(sv[0]);
        close(sv[1]);
        aloop_errno_error(rc);
        return -1;
    }
    loop->sig_rfd = sv[0];
    loop->sig_wfd = sv[1];
    return 0;
}

static PyObject *
LoopObj_add_signal_handler(LoopObj *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    aloop_state *st = self->state;
    static const aloop_signature sigspec = {"_UnixSelectorEventLoop",
                                            "add_signal_handler",
                                            {"sig", "callback"},
                                            2,
                                            2,
                                            true,
                                            NULL};
    aloop_bound_args a;
    if (aloop_args_bind(&sigspec, args, PyVectorcall_NARGS(nargs), kwnames,
                        &a) < 0) {
        return NULL;
    }
    PyObject *sig = a.params[0], *callback = a.params[1];
    int is_coro = aloop_loop_is_coroutine(self, callback);
    if (is_coro < 0) {
        return NULL;
    }
    if (is_coro) {
        PyErr_SetString(PyExc_TypeError,
                        "coroutines cannot be used with add_signal_handler()");
        return NULL;
    }
    if (signals_check(self, sig) < 0 || aloop_loop_check_closed(self) < 0 ||
        signals_ensure_pair(self) < 0) {
        return NULL;
    }
    /* set_wakeup_fd() raises ValueError outside the main thread: calling it
     * first keeps other threads from adding handlers. */
    PyObject *r = signals_call(self, "set_wakeup_fd", "(i)", self->sig_wfd);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) ||
            PyErr_ExceptionMatches(PyExc_OSError)) {
            PyObject *exc = aloop_fetch_exception();
            PyObject *msg = PyObject_Str(exc);
            Py_DECREF(exc);
            if (msg != NULL) {
                PyErr_SetObject(PyExc_RuntimeError, msg);
                Py_DECREF(msg);
            }
        }
        return NULL;
    }
    Py_DECREF(r);

    PyObject *cbargs = PyTuple_New(a.nrest);
    if (cbargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < a.nrest; i++) {
        PyTuple_SET_ITEM(cbargs, i, Py_NewRef(a.rest[i]));
    }
    HandleObj *h = aloop_handle_new(self, callback, cbargs, NULL);
    Py_DECREF(cbargs);
    if (h == NULL) {
        return NULL;
    }
    int rc = PyDict_SetItem(self->signal_handlers, sig, (PyObject *)h);
    Py_DECREF(h);
    if (rc < 0) {
        return NULL;
    }
    r = signals_call(self, "signal", "(OO)", sig, st->sighandler_noop);
    if (r != NULL) {
        Py_DECREF(r);
        /* Set SA_RESTART to limit EINTR occurrences. */
        r = signals_call(self, "siginterrupt", "(OO)", sig, Py_False);
    }
    if (r == NULL) {
        PyObject *exc = aloop_fetch_exception();
        if (PyDict_DelItem(self->signal_handlers, sig) < 0) {
            PyErr_Clear();
        }
        if (PyDict_GET_SIZE(self->signal_handlers) == 0) {
            signals_clear_wakeup_fd(self);
        }
        aloop_restore_exception(exc);
        signals_translate_einval(sig);
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
LoopObj_remove_signal_handler(LoopObj *self, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    static const aloop_signature sigspec = {"_UnixSelectorEventLoop",
                                            "remove_signal_handler",
                                            {"sig"},
                                            1,
                                            1,
                                            false,
                                            NULL};
    aloop_bound_args a;
    if (aloop_args_bind(&sigspec, args, PyVectorcall_NARGS(nargs), kwnames,
                        &a) < 0) {
        return NULL;
    }
    PyObject *sig = a.params[0];
    if (signals_check(self, sig) < 0) {
        return NULL;
    }
    int has = PyDict_Contains(self->signal_handlers, sig);
    if (has <= 0) {
        return has < 0 ? NULL : Py_NewRef(Py_False);
    }
    if (PyDict_DelItem(self->signal_handlers, sig) < 0) {
        return NULL;
    }
    PyObject *sigint = signals_lookup(self, "signal", "SIGINT");
    int is_int = sigint ? PyObject_RichCompareBool(sig, sigint, Py_EQ) : -1;
    Py_XDECREF(sigint);
    if (is_int < 0) {
        return NULL;
    }
    PyObject *handler = signals_lookup(
        self, "signal", is_int ? "default_int_handler" : "SIG_DFL");
    PyObject *r =
        handler ? signals_call(self, "signal", "(OO)", sig, handler) : NULL;
    Py_XDECREF(handler);
    if (r == NULL) {
        signals_translate_einval(sig);
        return NULL;
    }
    Py_DECREF(r);
    if (PyDict_GET_SIZE(self->signal_handlers) == 0) {
        signals_clear_wakeup_fd(self);
    }
    Py_RETURN_TRUE;
}

static PyObject *
LoopObj__handle_signal(LoopObj *self, PyObject *sig)
{
    int signum = PyLong_AsLong(sig);
    if (signum == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (signals_handle_one(self, signum) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* On close: remove every handler, like _UnixSelectorEventLoop.close(). */
void
aloop_signals_close(LoopObj *loop)
{
    PyObject *handlers = loop->signal_handlers;
    if (handlers != NULL && PyDict_GET_SIZE(handlers)) {
        int finalizing = aloop_is_finalizing();
        if (!finalizing) {
            PyObject *f = signals_lookup(loop, "sys", "is_finalizing");
            PyObject *r = f ? PyObject_CallNoArgs(f) : NULL;
            finalizing = r ? PyObject_IsTrue(r) : -1;
            Py_XDECREF(f);
            Py_XDECREF(r);
            if (finalizing < 0) {
                return;
            }
        }
        if (!finalizing) {
            PyObject *sigs = PyDict_Keys(handlers);
            for (Py_ssize_t i = 0; sigs && i < PyList_GET_SIZE(sigs); i++) {
                PyObject *r = PyObject_CallMethod(
                    (PyObject *)loop, "remove_signal_handler", "(O)",
                    PyList_GET_ITEM(sigs, i));
                if (r == NULL) {
                    break;
                }
                Py_DECREF(r);
            }
            Py_XDECREF(sigs);
        } else {
            PyErr_ResourceWarning(
                (PyObject *)loop, 1,
                "Closing the loop %R on interpreter shutdown "
                "stage, skipping signal handlers removal",
                (PyObject *)loop);
            PyDict_Clear(handlers);
        }
    }
    if (loop->sig_rfd >= 0) {
        close(loop->sig_rfd);
        close(loop->sig_wfd);
        loop->sig_rfd = loop->sig_wfd = -1;
    }
}

PyMethodDef aloop_signal_methods[] = {
    {"add_signal_handler",
     (PyCFunction)(void (*)(void))LoopObj_add_signal_handler,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"remove_signal_handler",
     (PyCFunction)(void (*)(void))LoopObj_remove_signal_handler,
     METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_handle_signal", (PyCFunction)LoopObj__handle_signal, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
