/* loop_io.c -- the readiness API: add_reader, remove_reader, add_writer,
 * remove_writer and the private _add_reader & co that the stdlib's pipe and
 * subprocess transports call.
 *
 * Semantics are selector_events.BaseSelectorEventLoop's: the public forms
 * first refuse an fd owned by a live transport; the private ones check the
 * loop is open (add) or return False on a closed loop (remove); replacing or
 * removing a watcher cancels the old Handle; _add_* return the new Handle,
 * remove* return whether a callback was removed.
 */
#include "aloop.h"

/* fileobj's fd as selectors._fileobj_to_fd finds it, before its range
 * check: 0, or -1 with ValueError("Invalid file object") where the stdlib
 * raises it. */
static int
fileobj_fileno(PyObject *fileobj, long *fd)
{
    if (PyLong_Check(fileobj)) {
        *fd = PyLong_AsLong(fileobj);
        return (*fd == -1 && PyErr_Occurred()) ? -1 : 0;
    }
    PyObject *r = PyObject_CallMethod(fileobj, "fileno", NULL);
    PyObject *i = r ? PyNumber_Long(r) : NULL;
    Py_XDECREF(r);
    if (i == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError) ||
            PyErr_ExceptionMatches(PyExc_TypeError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "Invalid file object: %R", fileobj);
        }
        return -1;
    }
    *fd = PyLong_AsLong(i);
    Py_DECREF(i);
    return (*fd == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* selectors._fileobj_to_fd */
int
aloop_fileobj_to_fd(PyObject *fileobj)
{
    long fd;
    if (fileobj_fileno(fileobj, &fd) < 0) {
        return -1;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return -1;
    }
    if (fd > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "file descriptor is too large");
        return -1;
    }
    return (int)fd;
}

/* selectors' _fileobj_lookup: the fd of fileobj or, when it has none any
 * more (a closed socket's fileno() is -1), the fd it was registered with
 * through add_reader/add_writer -- so that it can still be removed. */
static int
loop_io_lookup_fd(LoopObj *loop, PyObject *fileobj)
{
    int fd = aloop_fileobj_to_fd(fileobj);
    if (fd >= 0 || loop->io_fileobjs == NULL ||
        !PyErr_ExceptionMatches(PyExc_ValueError)) {
        return fd;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(loop->io_fileobjs, &pos, &k, &v)) {
        if (v == fileobj) {
            PyErr_Clear();
            return (int)PyLong_AsLong(k);
        }
    }
    return -1;
}

/* Remember the file object a registration was made with, as an epoll
 * selector key's fileobj: set when the fd gets its first watcher, kept
 * while the fd stays registered (modify() keeps it), dropped with the last
 * watcher.  Python code (a finalizer) may run. */
static int
loop_io_note_fileobj(LoopObj *loop, int fd, PyObject *fileobj,
                     uint32_t old_mask)
{
    aloop_fdslot *slot = aloop_fdtable_get(&loop->fds, fd);
    bool registered = slot != NULL && slot->mask != 0;
    if (registered == (old_mask != 0)) {
        return 0;
    }
    bool keep = registered && !PyLong_Check(fileobj);
    if (!keep && loop->io_fileobjs == NULL) {
        return 0;
    }
    if (loop->io_fileobjs == NULL) {
        loop->io_fileobjs = PyDict_New();
        if (loop->io_fileobjs == NULL) {
            return -1;
        }
    }
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL) {
        return -1;
    }
    int rc = keep ? PyDict_SetItem(loop->io_fileobjs, key, fileobj)
                  : PyDict_DelItem(loop->io_fileobjs, key);
    if (rc < 0 && !keep && PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        rc = 0;
    }
    Py_DECREF(key);
    return rc;
}

/* BaseSelectorEventLoop._ensure_fd_no_transport: loop._transports is
 * our TransportMap unless someone replaced it (then: the mapping
 * protocol, as the stdlib). */
int
aloop_loop_ensure_no_transport(LoopObj *loop, PyObject *fileobj)
{
    long fd;
    if (fileobj_fileno(fileobj, &fd) < 0) {
        return -1;
    }
    if (fd < 0) {
        return 0; /* a closed socket's -1: no transport has it */
    }
    aloop_state *st = loop->state;
    PyObject *transports =
        PyObject_GetAttr((PyObject *)loop, st->str_transports);
    if (transports == NULL) {
        return -1;
    }
    PyObject *key = PyLong_FromLong(fd);
    PyObject *transport = NULL;
    int rc = -1;
    if (key == NULL) {
        goto done;
    }
    if (aloop_transportmap_check(st, transports)) {
        transport = aloop_transportmap_get(transports, key);
    } else {
        transport = PyObject_GetItem(transports, key);
        if (transport == NULL && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
        }
    }
    if (transport == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    PyObject *closing = PyObject_CallMethod(transport, "is_closing", NULL);
    int truth = closing ? PyObject_IsTrue(closing) : -1;
    Py_XDECREF(closing);
    if (truth == 0) {
        PyErr_Format(PyExc_RuntimeError,
                     "File descriptor %R is used by transport %R", fileobj,
                     transport);
    }
    rc = truth > 0 ? 0 : -1;
done:
    Py_XDECREF(transport);
    Py_XDECREF(key);
    Py_DECREF(transports);
    return rc;
}

/* Drop a replaced or removed watcher: a Handle is cancelled, as the
 * stdlib does; an internal owner (transport, acceptor, sock op) is just
 * released. */
static int
loop_io_cancel_old(PyObject *old)
{
    if (old == NULL) {
        return 0;
    }
    aloop_state *st = (aloop_state *)PyType_GetModuleState(Py_TYPE(old));
    int rc = 0;
    if (st != NULL && Py_IS_TYPE(old, st->HandleType)) {
        rc = aloop_handle_cancel((HandleObj *)old);
    }
    Py_DECREF(old);
    return rc;
}

/* add_reader & co: `(fd, callback, *args)`; 0, or -1 (TypeError). */
static int
loop_io_bind_add(const char *meth, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, aloop_bound_args *a)
{
    aloop_signature sig = {
        "BaseSelectorEventLoop", meth, {"fd", "callback"}, 2, 2, true, NULL};
    return aloop_args_bind(&sig, args, nargs, kwnames, a);
}

/* The `fd` of remove_reader & co; borrowed, or NULL (TypeError). */
static PyObject *
loop_io_bind_remove(const char *meth, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    aloop_signature sig = {
        "BaseSelectorEventLoop", meth, {"fd"}, 1, 1, false, NULL};
    aloop_bound_args a;
    return aloop_args_bind(&sig, args, nargs, kwnames, &a) < 0 ? NULL
                                                               : a.params[0];
}

/* Register the Handle callback(*args) for `which` readiness of fileobj. */
static PyObject *
loop_io_add(LoopObj *self, uint32_t which, const aloop_bound_args *a)
{
    PyObject *fileobj = a->params[0];
    if (aloop_loop_check_closed(self) < 0) {
        return NULL;
    }
    PyObject *cbargs = PyTuple_New(a->nrest);
    if (cbargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < a->nrest; i++) {
        PyTuple_SET_ITEM(cbargs, i, Py_NewRef(a->rest[i]));
    }
    HandleObj *h = aloop_handle_new(self, a->params[1], cbargs, NULL);
    Py_DECREF(cbargs);
    if (h == NULL) {
        return NULL;
    }
    int fd = loop_io_lookup_fd(self, fileobj);
    if (fd < 0) {
        Py_DECREF(h);
        return NULL;
    }
    aloop_fdslot *slot = aloop_fdtable_get(&self->fds, fd);
    uint32_t old_mask = slot ? slot->mask : 0;
    PyObject *old = NULL;
    int rc =
        aloop_loop_set_watcher(self, fd, which, (PyObject *)h, NULL, &old);
    if (rc < 0) {
        Py_DECREF(h);
        return aloop_errno_error(rc);
    }
    if (loop_io_cancel_old(old) < 0 ||
        loop_io_note_fileobj(self, fd, fileobj, old_mask) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

static PyObject *
loop_io_remove(LoopObj *self, uint32_t which, PyObject *fileobj)
{
    if (self->closed) {
        Py_RETURN_FALSE;
    }
    int fd = loop_io_lookup_fd(self, fileobj);
    if (fd < 0) {
        return NULL;
    }
    aloop_fdslot *slot = aloop_fdtable_get(&self->fds, fd);
    if (slot == NULL || slot->mask == 0) {
        Py_RETURN_FALSE;
    }
    uint32_t old_mask = slot->mask;
    PyObject *old = NULL;
    int rc = aloop_loop_set_watcher(self, fd, which, NULL, NULL, &old);
    if (rc < 0) {
        /* Removed all the same; the stdlib's modify() raises before it
         * cancels the handle. */
        Py_XDECREF(old);
        return aloop_errno_error(rc);
    }
    if (old == NULL) {
        Py_RETURN_FALSE;
    }
    if (loop_io_cancel_old(old) < 0 ||
        loop_io_note_fileobj(self, fd, fileobj, old_mask) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

/* The private forms (_add_reader...) return the Handle, as the stdlib's;
 * the public ones refuse an fd a transport owns and return None. */
static PyObject *
loop_io_add_entry(LoopObj *self, uint32_t which, const char *meth, bool public,
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    aloop_bound_args a;
    if (loop_io_bind_add(meth, args, PyVectorcall_NARGS(nargs), kwnames, &a) <
        0) {
        return NULL;
    }
    if (public && aloop_loop_ensure_no_transport(self, a.params[0]) < 0) {
        return NULL;
    }
    PyObject *h = loop_io_add(self, which, &a);
    if (h == NULL || !public) {
        return h;
    }
    Py_DECREF(h);
    Py_RETURN_NONE;
}

static PyObject *
loop_io_remove_entry(LoopObj *self, uint32_t which, const char *meth,
                     bool public, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    PyObject *fd =
        loop_io_bind_remove(meth, args, PyVectorcall_NARGS(nargs), kwnames);
    if (fd == NULL ||
        (public && aloop_loop_ensure_no_transport(self, fd) < 0)) {
        return NULL;
    }
    return loop_io_remove(self, which, fd);
}

#define LOOP_IO_ENTRY(name, kind, which, public)                          \
    static PyObject *LoopObj_##name(LoopObj *self, PyObject *const *args, \
                                    Py_ssize_t nargs, PyObject *kwnames)  \
    {                                                                     \
        return loop_io_##kind##_entry(self, which, #name, public, args,   \
                                      nargs, kwnames);                    \
    }
LOOP_IO_ENTRY(_add_reader, add, ALOOP_READ, false)
LOOP_IO_ENTRY(_add_writer, add, ALOOP_WRITE, false)
LOOP_IO_ENTRY(_remove_reader, remove, ALOOP_READ, false)
LOOP_IO_ENTRY(_remove_writer, remove, ALOOP_WRITE, false)
LOOP_IO_ENTRY(add_reader, add, ALOOP_READ, true)
LOOP_IO_ENTRY(add_writer, add, ALOOP_WRITE, true)
LOOP_IO_ENTRY(remove_reader, remove, ALOOP_READ, true)
LOOP_IO_ENTRY(remove_writer, remove, ALOOP_WRITE, true)

static PyObject *
LoopObj__ensure_fd_no_transport(LoopObj *self, PyObject *fd)
{
    if (aloop_loop_ensure_no_transport(self, fd) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------ loop._selector view
 * The stdlib's own transports read loop._selector (e.g. the socket
 * transport's __repr__ asks get_key(fd).events).  This read-only view
 * answers get_key()/get_map() from the fd table with selectors.SelectorKey
 * tuples whose data is (reader, writer), as BaseSelectorEventLoop's. */
typedef struct {
    PyObject_HEAD LoopObj *loop; /* strong */
} SelectorViewObj;

static PyObject *
selector_view_key(LoopObj *loop, int fd)
{
    aloop_fdslot *slot = aloop_fdtable_get(&loop->fds, fd);
    if (slot == NULL || slot->mask == 0) {
        return NULL;
    }
    PyObject *r = slot->reader.fn ? Py_None : slot->reader.obj;
    PyObject *w = slot->writer.fn ? Py_None : slot->writer.obj;
    PyObject *fdobj = PyLong_FromLong(fd);
    if (fdobj == NULL) {
        return NULL;
    }
    PyObject *fileobj = loop->io_fileobjs
                            ? PyDict_GetItemWithError(loop->io_fileobjs, fdobj)
                            : NULL;
    PyObject *key = PyErr_Occurred()
                        ? NULL
                        : PyObject_CallFunction(
                              loop->state->SelectorKey, "OOI(OO)",
                              fileobj ? fileobj : fdobj, fdobj, slot->mask,
                              r ? r : Py_None, w ? w : Py_None);
    Py_DECREF(fdobj);
    return key;
}

static PyObject *
SelectorViewObj_get_key(SelectorViewObj *self, PyObject *fileobj)
{
    int fd = loop_io_lookup_fd(self->loop, fileobj);
    if (fd < 0) {
        return NULL;
    }
    PyObject *key = selector_view_key(self->loop, fd);
    if (key == NULL && !PyErr_Occurred()) {
        PyErr_Format(PyExc_KeyError, "%R is not registered", fileobj);
    }
    return key;
}

static PyObject *
SelectorViewObj_get_map(SelectorViewObj *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *map = PyDict_New();
    for (int fd = 0; map != NULL && fd < self->loop->fds.cap; fd++) {
        PyObject *key = selector_view_key(self->loop, fd);
        if (key == NULL) {
            if (PyErr_Occurred()) {
                Py_CLEAR(map);
            }
            continue;
        }
        PyObject *k = PyLong_FromLong(fd);
        if (k == NULL || PyDict_SetItem(map, k, key) < 0) {
            Py_CLEAR(map);
        }
        Py_XDECREF(k);
        Py_DECREF(key);
    }
    return map;
}

static int
SelectorViewObj_traverse(SelectorViewObj *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->loop);
    return 0;
}

static int
SelectorViewObj_clear(SelectorViewObj *self)
{
    Py_CLEAR(self->loop);
    return 0;
}

static void
SelectorViewObj_dealloc(SelectorViewObj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    (void)SelectorViewObj_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef SelectorViewObj_methods[] = {
    {"get_key", (PyCFunction)SelectorViewObj_get_key, METH_O, NULL},
    {"get_map", (PyCFunction)SelectorViewObj_get_map, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot selector_view_slots[] = {
    {Py_tp_dealloc, SelectorViewObj_dealloc},
    {Py_tp_traverse, SelectorViewObj_traverse},
    {Py_tp_clear, SelectorViewObj_clear},
    {Py_tp_methods, SelectorViewObj_methods},
    {0, NULL},
};

static PyType_Spec selector_view_spec = {
    .name = "aloop._core.SelectorView",
    .basicsize = sizeof(SelectorViewObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = selector_view_slots,
};

int
aloop_loop_io_setup_types(PyObject *module, aloop_state *st)
{
    st->SelectorViewType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &selector_view_spec, NULL);
    return st->SelectorViewType ? 0 : -1;
}

/* loop._selector: the view, or None once the loop is closed. */
PyObject *
aloop_loop_selector_view(LoopObj *loop)
{
    if (loop->closed) {
        Py_RETURN_NONE;
    }
    SelectorViewObj *v =
        PyObject_GC_New(SelectorViewObj, loop->state->SelectorViewType);
    if (v == NULL) {
        return NULL;
    }
    v->loop = (LoopObj *)Py_NewRef((PyObject *)loop);
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

#define LOOP_IO_METHOD(name)                             \
    {#name, (PyCFunction)(void (*)(void))LoopObj_##name, \
     METH_FASTCALL | METH_KEYWORDS, NULL}

PyMethodDef aloop_loop_io_methods[] = {
    LOOP_IO_METHOD(add_reader),
    LOOP_IO_METHOD(add_writer),
    LOOP_IO_METHOD(remove_reader),
    LOOP_IO_METHOD(remove_writer),
    LOOP_IO_METHOD(_add_reader),
    LOOP_IO_METHOD(_add_writer),
    LOOP_IO_METHOD(_remove_reader),
    LOOP_IO_METHOD(_remove_writer),
    {"_ensure_fd_no_transport", (PyCFunction)LoopObj__ensure_fd_no_transport,
     METH_O, NULL},
    {NULL, NULL, 0, NULL},
};
