/* module.c -- the aloop._core module: multi-phase init, module state,
 * type registration.
 *
 * The state holds the types, interned names and the asyncio/sys/signal
 * objects imported once at exec time.  Every file exports an
 * aloop_<file>_setup_types(); module_exec chains them.  m_traverse/m_clear
 * visit the state's objects in struct order.
 */
#include "aloop.h"

static struct PyModuleDef aloop_module;

aloop_state *
aloop_module_state_of_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &aloop_module);
    return mod ? (aloop_state *)PyModule_GetState(mod) : NULL;
}

PyObject *
aloop_logger(PyObject *module)
{
    return PyObject_GetAttrString(module, "logger");
}

int
aloop_log(PyObject *module, const char *level, const char *fmt, PyObject *arg)
{
    PyObject *logger = aloop_logger(module);
    PyObject *r =
        logger ? PyObject_CallMethod(logger, level, "sO", fmt, arg) : NULL;
    Py_XDECREF(logger);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static PyObject *
aloop_sighandler_noop(PyObject *module, PyObject *args)
{
    /* Python's C handler already wrote the signal number to the wakeup fd. */
    Py_RETURN_NONE;
}

Py_ssize_t aloop_live_handles;
Py_ssize_t aloop_live_loops;

static PyObject *
aloop_live_objects(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{snsn}", "handles", aloop_live_handles, "loops",
                         aloop_live_loops);
}

static PyMethodDef aloop_module_methods[] = {
    {"_live_objects", aloop_live_objects, METH_NOARGS,
     "Counts of live Handle/TimerHandle and Loop objects (for leak tests)."},
    {"_sighandler_noop", aloop_sighandler_noop, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyObject *
import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return r;
}

#define STATE_OBJECTS(X)                 \
    X(Future)                            \
    X(SelectorKey)                       \
    X(socket_type)                       \
    X(SSLSocket)                         \
    X(ipaddr_info)                       \
    X(base_sock_connect)                 \
    X(str_fileno)                        \
    X(str_close)                         \
    X(str_attach)                        \
    X(str_detach)                        \
    X(str_connection_made)               \
    X(str_connection_lost)               \
    X(str_eof_received)                  \
    X(str_ensure_fd_no_transport)        \
    X(str_future_blocking)               \
    X(str_throw)                         \
    X(str_done)                          \
    X(str_result)                        \
    X(str_set_result)                    \
    X(str_set_exception)                 \
    X(str_task_factory)                  \
    X(str_transports)                    \
    X(BufferedProtocol)                  \
    X(TransportSocket)                   \
    X(set_nodelay)                       \
    X(sock_family)                       \
    X(sock_type)                         \
    X(sock_proto)                        \
    X(set_result_unless)                 \
    X(str_peername)                      \
    X(str_sockname)                      \
    X(str_socket)                        \
    X(str_send_raised)                   \
    X(ssl_handshake_timeout)             \
    X(ssl_shutdown_timeout)              \
    X(SSLProtocol)                       \
    X(events)                            \
    X(str_get_running_loop)              \
    X(str_set_running_loop)              \
    X(format_callback_source)            \
    X(extract_stack)                     \
    X(format_handle)                     \
    X(base_events)                       \
    X(selector_events)                   \
    X(iscoroutine)                       \
    X(iscoroutinefunction)               \
    X(get_asyncgen_hooks)                \
    X(set_asyncgen_hooks)                \
    X(unix_events)                       \
    X(weakset)                           \
    X(empty_tuple)                       \
    X(sighandler_noop)                   \
    X(str_call_exception_handler)        \
    X(str_message)                       \
    X(str_exception)                     \
    X(str_handle)                        \
    X(str_source_traceback)              \
    X(str_loop)                          \
    X(str_debug)                         \
    X(str_firstiter)                     \
    X(str_finalizer)                     \
    X(str_asyncgen_firstiter_hook)       \
    X(str_asyncgen_finalizer_hook)       \
    X(str_set_coroutine_origin_tracking) \
    X(str_run)                           \
    X(str_cancelled_attr)                \
    X(str_time)                          \
    X(str_create_future)                 \
    X(hook_names)                        \
    X(hook_defaults)                     \
    X(kwnames_loop)                      \
    X(kwnames_task)                      \
    X(Task)                              \
    X(base_create_task)

static int
module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    aloop_state *st = PyModule_GetState(mod);
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->SelectorViewType);
    Py_VISIT(st->SockOpType);
    Py_VISIT(st->StreamType);
    Py_VISIT(st->AcceptorType);
    Py_VISIT(st->DatagramType);
    Py_VISIT(st->TransportMapType);
#define VISIT(name) Py_VISIT(st->name);
    STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
module_clear(PyObject *mod)
{
    aloop_state *st = PyModule_GetState(mod);
    aloop_handle_freelist_clear(st); /* before the types it references */
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->SelectorViewType);
    Py_CLEAR(st->SockOpType);
    Py_CLEAR(st->StreamType);
    Py_CLEAR(st->AcceptorType);
    Py_CLEAR(st->DatagramType);
    Py_CLEAR(st->TransportMapType);
#define CLEAR(name) Py_CLEAR(st->name);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
module_free(void *mod)
{
    (void)module_clear((PyObject *)mod);
}

static int
module_exec(PyObject *mod)
{
    aloop_state *st = PyModule_GetState(mod);
#define INTERN(field, s)                                       \
    if ((st->field = PyUnicode_InternFromString(s)) == NULL) { \
        return -1;                                             \
    }
    INTERN(str_call_exception_handler, "call_exception_handler")
    INTERN(str_message, "message")
    INTERN(str_exception, "exception")
    INTERN(str_handle, "handle")
    INTERN(str_source_traceback, "source_traceback")
    INTERN(str_loop, "loop")
    INTERN(str_debug, "debug")
    INTERN(str_firstiter, "firstiter")
    INTERN(str_finalizer, "finalizer")
    INTERN(str_asyncgen_firstiter_hook, "_asyncgen_firstiter_hook")
    INTERN(str_asyncgen_finalizer_hook, "_asyncgen_finalizer_hook")
    INTERN(str_set_coroutine_origin_tracking, "_set_coroutine_origin_tracking")
    INTERN(str_run, "_run")
    INTERN(str_cancelled_attr, "_cancelled")
    INTERN(str_time, "time")
    INTERN(str_create_future, "create_future")
    INTERN(str_fileno, "fileno")
    INTERN(str_sockname, "sockname")
    INTERN(str_socket, "socket")
    INTERN(str_close, "close")
    INTERN(str_attach, "_attach")
    INTERN(str_detach, "_detach")
    INTERN(str_connection_made, "connection_made")
    INTERN(str_connection_lost, "connection_lost")
    INTERN(str_eof_received, "eof_received")
    INTERN(str_ensure_fd_no_transport, "_ensure_fd_no_transport")
    INTERN(str_future_blocking, "_asyncio_future_blocking")
    INTERN(str_throw, "throw")
    INTERN(str_done, "done")
    INTERN(str_result, "result")
    INTERN(str_set_result, "set_result")
    INTERN(str_set_exception, "set_exception")
    INTERN(str_task_factory, "_task_factory")
    INTERN(str_transports, "_transports")
    INTERN(str_get_running_loop, "_get_running_loop")
    INTERN(str_set_running_loop, "_set_running_loop")
    INTERN(str_peername, "peername")
    INTERN(str_send_raised, "socket.send() raised exception.")
#undef INTERN
#define IMPORT(field, module, name)                        \
    if ((st->field = import_attr(module, name)) == NULL) { \
        return -1;                                         \
    }
    IMPORT(Future, "asyncio.futures", "Future")
    IMPORT(SelectorKey, "selectors", "SelectorKey")
    IMPORT(socket_type, "socket", "socket")
    IMPORT(ssl_handshake_timeout, "asyncio.constants", "SSL_HANDSHAKE_TIMEOUT")
    IMPORT(ssl_shutdown_timeout, "asyncio.constants", "SSL_SHUTDOWN_TIMEOUT")
    IMPORT(SSLProtocol, "asyncio.sslproto", "SSLProtocol")
    IMPORT(BufferedProtocol, "asyncio.protocols", "BufferedProtocol")
    IMPORT(TransportSocket, "asyncio.trsock", "TransportSocket")
    IMPORT(set_nodelay, "asyncio.base_events", "_set_nodelay")
    IMPORT(set_result_unless, "asyncio.futures",
           "_set_result_unless_cancelled")
    IMPORT(ipaddr_info, "asyncio.base_events", "_ipaddr_info")
    IMPORT(format_callback_source, "asyncio.format_helpers",
           "_format_callback_source")
    IMPORT(extract_stack, "asyncio.format_helpers", "extract_stack")
    IMPORT(format_handle, "asyncio.base_events", "_format_handle")
    IMPORT(iscoroutine, "asyncio.coroutines", "iscoroutine")
    IMPORT(iscoroutinefunction, "asyncio.coroutines", "iscoroutinefunction")
    IMPORT(get_asyncgen_hooks, "sys", "get_asyncgen_hooks")
    IMPORT(set_asyncgen_hooks, "sys", "set_asyncgen_hooks")
    IMPORT(weakset, "weakref", "WeakSet")
    IMPORT(Task, "asyncio.tasks", "Task")
#undef IMPORT
    st->sighandler_noop = PyObject_GetAttrString(mod, "_sighandler_noop");
    if (st->sighandler_noop == NULL ||
        (st->unix_events = PyImport_ImportModule("asyncio.unix_events")) ==
            NULL ||
        (st->events = PyImport_ImportModule("asyncio.events")) == NULL ||
        (st->base_events = PyImport_ImportModule("asyncio.base_events")) ==
            NULL ||
        (st->selector_events =
             PyImport_ImportModule("asyncio.selector_events")) == NULL ||
        (st->empty_tuple = PyTuple_New(0)) == NULL ||
        (st->kwnames_loop = PyTuple_Pack(1, st->str_loop)) == NULL ||
        (st->kwnames_task =
             Py_BuildValue("(sss)", "loop", "name", "context")) == NULL) {
        return -1;
    }
    /* ssl may be missing from a Python build: then no socket is SSL. */
    st->SSLSocket = import_attr("ssl", "SSLSocket");
    if (st->SSLSocket == NULL) {
        PyErr_Clear();
        st->SSLSocket = Py_NewRef(Py_None);
    }
    PyObject *sel =
        import_attr("asyncio.selector_events", "BaseSelectorEventLoop");
    st->base_sock_connect =
        sel ? PyObject_GetAttrString(sel, "sock_connect") : NULL;
    Py_XDECREF(sel);
    if (st->base_sock_connect == NULL) {
        return -1;
    }
    /* _socket.socket's int members, read without socket.socket's enum
     * properties */
    PyObject *csock = import_attr("_socket", "socket");
    if (csock == NULL ||
        (st->sock_family = PyObject_GetAttrString(csock, "family")) == NULL ||
        (st->sock_type = PyObject_GetAttrString(csock, "type")) == NULL ||
        (st->sock_proto = PyObject_GetAttrString(csock, "proto")) == NULL) {
        Py_XDECREF(csock);
        return -1;
    }
    Py_DECREF(csock);
    PyObject *base = import_attr("asyncio.base_events", "BaseEventLoop");
    st->base_create_task =
        base ? PyObject_GetAttrString(base, "create_task") : NULL;
    Py_XDECREF(base);
    if (st->base_create_task == NULL) {
        return -1;
    }
    if (aloop_handle_setup_types(mod, st) < 0 ||
        aloop_loop_io_setup_types(mod, st) < 0 ||
        aloop_sockops_setup_types(mod, st) < 0 ||
        aloop_stream_setup_types(mod, st) < 0 ||
        aloop_server_setup_types(mod, st) < 0 ||
        aloop_datagram_setup_types(mod, st) < 0 ||
        aloop_transportmap_setup_types(mod, st) < 0 ||
        aloop_loop_setup_types(mod, st) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot aloop_module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef aloop_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aloop._core",
    .m_doc = "aloop's C event loop core.",
    .m_size = sizeof(aloop_state),
    .m_methods = aloop_module_methods,
    .m_slots = aloop_module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void); /* the only exported symbol */

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&aloop_module);
}
