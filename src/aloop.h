/* aloop.h -- the one internal header of the aloop extension.
 *
 * Declares the module state, the object structs shared between files and
 * every cross-file function, grouped under the name of the file that
 * defines it.  Conventions (see STYLE.md):
 *   - pure C layers (ready queue, timer heap, fd table, poller) return 0 or
 *     -errno and never touch the Python error state;
 *   - Python-facing functions return NULL / -1 with an exception set;
 *   - "owns" means the structure holds one strong reference.
 */
#ifndef ALOOP_H
#define ALOOP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <structmember.h>
#include <sys/socket.h>

#if PY_VERSION_HEX < 0x030B0000
#error "aloop needs CPython 3.11 or newer"
#endif

#ifdef ALOOP_DEBUG
#define ALOOP_ASSERT(x) assert(x)
#else
#define ALOOP_ASSERT(x) ((void)0)
#endif

/* Readiness bits, the same values as selectors.EVENT_READ/EVENT_WRITE. */
#define ALOOP_READ 1u
#define ALOOP_WRITE 2u
/* Poller flag: the registration disarms itself after reporting an event. */
#define ALOOP_ONESHOT 4u

/* The transports' recv() size (their max_size), and the size of the
 * per-loop scratch buffer they read into. */
#define ALOOP_READ_BUF_SIZE (256 * 1024)

/* From this size on, copying a read out of the scratch buffer costs more
 * than asking the kernel how much is queued (one ioctl) and receiving it
 * straight into its own bytes object. */
#define ALOOP_DIRECT_READ (64 * 1024)

/* BaseEventLoop's limits. */
#define ALOOP_MAX_SELECT_TIMEOUT (24.0 * 3600.0)
#define ALOOP_MIN_SCHEDULED_TIMER_HANDLES 100
#define ALOOP_MIN_CANCELLED_TIMER_HANDLES_FRACTION 0.5

typedef struct LoopObj LoopObj;
typedef struct HandleObj HandleObj;

/* sockaddr.c: the last sockaddr converted, and its Python form (owned). */
typedef struct {
    struct sockaddr_storage raw;
    unsigned int len;
    PyObject *obj;
} aloop_sockaddr_memo;

/* ---------------------------------------------------------------- module.c
 * Module state: types, interned names and what is imported once. */
typedef struct {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *SelectorViewType;
    PyTypeObject *SockOpType;
    PyTypeObject *StreamType;
    PyTypeObject *AcceptorType;
    PyTypeObject *DatagramType;
    PyTypeObject *TransportMapType;

    PyObject *Future;            /* asyncio.Future */
    PyObject *SelectorKey;       /* selectors.SelectorKey */
    PyObject *socket_type;       /* socket.socket */
    PyObject *SSLSocket;         /* ssl.SSLSocket, or None */
    PyObject *ipaddr_info;       /* base_events._ipaddr_info */
    PyObject *base_sock_connect; /* BaseSelectorEventLoop.sock_connect */
    PyObject *str_fileno;
    PyObject *str_close; /* per-connection method names: */
    PyObject *str_attach;
    PyObject *str_detach;
    PyObject *str_connection_made;
    PyObject *str_connection_lost;
    PyObject *str_eof_received;
    PyObject *str_ensure_fd_no_transport;
    PyObject *str_future_blocking; /* "_asyncio_future_blocking" */
    PyObject *str_throw;
    PyObject *str_done;
    PyObject *str_result;
    PyObject *str_set_result;
    PyObject *str_set_exception;
    PyObject *str_task_factory;  /* "_task_factory" */
    PyObject *str_transports;    /* "_transports" */
    PyObject *BufferedProtocol;  /* asyncio.protocols.BufferedProtocol */
    PyObject *TransportSocket;   /* asyncio.trsock.TransportSocket */
    PyObject *set_nodelay;       /* base_events._set_nodelay */
    PyObject *sock_family;       /* _socket.socket's family member */
    PyObject *sock_type;         /* ... type member */
    PyObject *sock_proto;        /* ... proto member */
    PyObject *set_result_unless; /* futures._set_result_unless_cancelled */
    PyObject *str_peername;
    PyObject *str_sockname;
    PyObject *str_socket;
    PyObject *str_send_raised;       /* "socket.send() raised exception." */
    PyObject *ssl_handshake_timeout; /* asyncio.constants defaults */
    PyObject *ssl_shutdown_timeout;
    PyObject *SSLProtocol; /* asyncio.sslproto.SSLProtocol */
    PyObject *events;      /* asyncio.events: _get/_set_running_loop are looked
                            * up per call, as the stdlib does (tests patch them) */
    PyObject *str_get_running_loop; /* "_get_running_loop" */
    PyObject *str_set_running_loop; /* "_set_running_loop" */
    PyObject
        *format_callback_source; /* format_helpers._format_callback_source */
    PyObject *extract_stack;     /* format_helpers.extract_stack */
    PyObject *format_handle;     /* base_events._format_handle */
    /* asyncio.base_events and asyncio.selector_events: like the stdlib,
     * code logs through the `logger` global of the module the stdlib's
     * code lives in, looked up per call (tests patch it there) */
    PyObject *base_events;
    PyObject *selector_events;
    PyObject *iscoroutine;         /* asyncio.coroutines.iscoroutine */
    PyObject *iscoroutinefunction; /* asyncio.coroutines.iscoroutinefunction */
    PyObject *get_asyncgen_hooks;  /* sys.get_asyncgen_hooks */
    PyObject *set_asyncgen_hooks;  /* sys.set_asyncgen_hooks */
    PyObject *unix_events; /* asyncio.unix_events: its `signal` and `sys`
                            * globals, looked up per call (tests patch them) */
    PyObject *weakset;     /* weakref.WeakSet */
    PyObject *empty_tuple;
    PyObject *sighandler_noop; /* the Python-level handler we install */

    PyObject *str_call_exception_handler;
    PyObject *str_message;
    PyObject *str_exception;
    PyObject *str_handle;
    PyObject *str_source_traceback;
    PyObject *str_loop;
    PyObject *str_debug;
    PyObject *str_firstiter;
    PyObject *str_finalizer;
    PyObject *str_asyncgen_firstiter_hook;
    PyObject *str_asyncgen_finalizer_hook;
    PyObject *str_set_coroutine_origin_tracking;
    PyObject *str_run;
    PyObject *str_cancelled_attr; /* "_cancelled" */
    PyObject *str_time;           /* "time" */
    PyObject *str_create_future;  /* "create_future" */
    PyObject *hook_names;         /* loopclass.c: the hooks' names, */
    PyObject *hook_defaults;      /* and aloop.Loop's own attributes */
    PyObject *kwnames_loop;       /* ("loop",) */
    PyObject *kwnames_task;       /* ("loop", "name", "context") */
    PyObject *Task;               /* asyncio.tasks.Task */
    PyObject *base_create_task;   /* BaseEventLoop.create_task (slow path) */

    /* Dead handles kept for reuse (linked through their `callback` field,
     * each owning a reference to its type), so a handle costs no allocator
     * or GC-counter work.  Closed at module teardown; poisoned under ASan. */
    HandleObj *handle_freelist;
    int handle_freelist_len;
    bool handle_freelist_closed;
} aloop_state;

/* Live object counters (_core._live_objects()): tests check they return
 * to their start once loops and handles are gone.  Process-wide, not in
 * the module state: deallocators must not need the state, which the GC
 * may free first at interpreter exit. */
extern Py_ssize_t aloop_live_handles;
extern Py_ssize_t aloop_live_loops;

aloop_state *
aloop_module_state_of_type(PyTypeObject *tp);
/* Log through <module>.logger (module: a state module such as
 * st->base_events): level is "debug", "info", "warning"... */
PyObject *
aloop_logger(PyObject *module);
int
aloop_log(PyObject *module, const char *level, const char *fmt, PyObject *arg);

/* ------------------------------------------------------------------ args.c */
#define ALOOP_MAX_PARAMS 4

/* The signature of the stdlib method a C method stands in for. */
typedef struct {
    const char *owner; /* the stdlib class named in errors: BaseEventLoop */
    const char *name;
    const char *params[ALOOP_MAX_PARAMS]; /* positional-or-keyword */
    Py_ssize_t nparams, required; /* the ones after `required` optional */
    bool varargs;                 /* *args after the parameters */
    const char *kwonly;           /* one keyword-only parameter, or NULL */
} aloop_signature;

/* Borrowed from the call's vector; NULL for an omitted parameter. */
typedef struct {
    PyObject *params[ALOOP_MAX_PARAMS];
    PyObject *const *rest; /* *args */
    Py_ssize_t nrest;
    PyObject *kwonly;
} aloop_bound_args;

/* Bind a vectorcall's arguments as Python binds them to `sig`: 0, or -1
 * with the interpreter's TypeError. */
int
aloop_args_bind(const aloop_signature *sig, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames, aloop_bound_args *out);

/* ---------------------------------------------------------------- handle.c
 * HandleObj mirrors the layout of asyncio.Handle's and asyncio.TimerHandle's
 * __slots__ (sorted by name, as type() lays them out); module init checks
 * every offset against the stdlib's member descriptors, so the inherited
 * Python code (__repr__, __eq__...) and our C code see the same fields.
 * The _cancelled/_scheduled/_when slots are shadowed by getsets that read
 * the C fields below. */
struct HandleObj {
    PyObject_HEAD PyObject *args; /* _args: tuple or None */
    PyObject *callback;           /* _callback */
    PyObject *cancelled_slot;     /* unused: see `cancelled` */
    PyObject *context;            /* _context */
    PyObject *loop;               /* _loop */
    PyObject *repr;               /* _repr */
    PyObject *source_traceback;   /* _source_traceback */
#if PY_VERSION_HEX < 0x030C0000
    PyObject *weakreflist; /* __weakref__ (3.12+ manages it) */
#endif
    PyObject *scheduled_slot; /* TimerHandle's _scheduled slot, unused */
    PyObject *when_slot;      /* call_at's non-float `when`, or NULL */
    /* aloop's own fields */
    double when;  /* TimerHandle: deadline in loop.time() seconds */
    uint64_t seq; /* TimerHandle: tie breaker, FIFO among equal deadlines */
    bool cancelled;
    bool scheduled; /* TimerHandle: in the loop's heap */
    bool is_timer;
};

int
aloop_handle_setup_types(PyObject *module, aloop_state *st);
void
aloop_handle_freelist_clear(aloop_state *st);
/* New Handle; steals nothing.  args must be a tuple.  context may be NULL
 * (copy the current one). */
HandleObj *
aloop_handle_new(LoopObj *loop, PyObject *callback, PyObject *args,
                 PyObject *context);
HandleObj *
aloop_timerhandle_new(LoopObj *loop, double when, PyObject *callback,
                      PyObject *args, PyObject *context);
/* Run the callback in its context.  Returns 0, or -1 with
 * KeyboardInterrupt/SystemExit (or a failure of the handler) set. */
int
aloop_handle_run(HandleObj *h);
int
aloop_handle_cancel(HandleObj *h);
/* Report the current exception as Handle._run does for h's callback (h
 * may be made only for this, for a call aloop makes without a Handle).
 * 0, or -1 if the exception is fatal. */
int
aloop_handle_report_current(HandleObj *h);

/* ---------------------------------------------------------------- readyq.c
 * Ring buffer of ready entries.  An entry is a Python handle (fn == NULL)
 * or an internal event: fn(loop, owner, events).  The queue owns one
 * reference to each non-NULL obj. */
typedef int (*aloop_event_fn)(LoopObj *loop, PyObject *owner,
                              uint32_t events); /* -1: propagate */
typedef struct {
    PyObject *obj;
    aloop_event_fn fn;
    uint32_t events;
} aloop_ready_entry;

typedef struct {
    aloop_ready_entry *buf;
    size_t cap; /* power of two, or 0 */
    size_t head;
    size_t len;
} aloop_readyq;

int
aloop_readyq_push(aloop_readyq *q, PyObject *obj, aloop_event_fn fn,
                  uint32_t events); /* takes a new reference to obj */
/* Pops the oldest entry; the caller receives the reference. */
static inline aloop_ready_entry
aloop_readyq_pop(aloop_readyq *q)
{
    aloop_ready_entry e = q->buf[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return e;
}
void
aloop_readyq_clear(aloop_readyq *q);
void
aloop_readyq_shrink(aloop_readyq *q);
void
aloop_readyq_free(aloop_readyq *q);
int
aloop_readyq_traverse(aloop_readyq *q, visitproc visit, void *arg);

/* ------------------------------------------------------------- timerheap.c
 * Binary min-heap of TimerHandles keyed by (when, seq).  Owns one
 * reference to each handle. */
typedef struct {
    HandleObj **items;
    size_t len;
    size_t cap;
} aloop_timerheap;

int
aloop_timerheap_push(aloop_timerheap *h, HandleObj *t);
HandleObj *
aloop_timerheap_pop(aloop_timerheap *h); /* reference moves out */
/* Drop cancelled handles (clearing their scheduled flag) and re-heapify. */
void
aloop_timerheap_compact(aloop_timerheap *h);
void
aloop_timerheap_clear(aloop_timerheap *h);
int
aloop_timerheap_traverse(aloop_timerheap *h, visitproc visit, void *arg);

/* ---------------------------------------------------------- poller_epoll.c
 * The only file that calls epoll_*.  Events are reported with the
 * selectors module's rules: error/hangup wakes both directions. */
typedef struct {
    int fd;
    uint32_t events; /* ALOOP_READ | ALOOP_WRITE */
} aloop_poll_event;

typedef struct {
    int epfd;
    void *scratch; /* backend event array */
    int scratch_cap;
} aloop_poller;

int
aloop_poller_open(aloop_poller *p);
void
aloop_poller_close(aloop_poller *p);
int
aloop_poller_add(aloop_poller *p, int fd, uint32_t mask);
int
aloop_poller_modify(aloop_poller *p, int fd, uint32_t mask);
int
aloop_poller_remove(aloop_poller *p, int fd);
/* Waits up to timeout_ms (-1: forever).  Returns the number of events or
 * -errno.  Call without the GIL. */
int
aloop_poller_wait(aloop_poller *p, aloop_poll_event *out, int max,
                  int timeout_ms);

/* --------------------------------------------------------------- fdtable.c
 * fd -> reader/writer.  A watcher is a Python Handle (fn == NULL) or an
 * internal callback fn(loop, obj, events).  The table owns one reference
 * to each non-NULL obj.
 *
 * `mask` is what the fd is registered for, as a selector reports it: the
 * directions with a watcher.  `armed` is what the poller will report now.
 * They differ only for a oneshot registration (every watcher on the fd is
 * oneshot: the sock_* operations), which the poller disarms after each
 * event; it then stays in the poller, disarmed (`in_poller`), so that the
 * next wait costs one modify instead of an add now and a remove later. */
typedef struct {
    PyObject *obj;
    aloop_event_fn fn;
    bool oneshot; /* fine with a registration that disarms after an event */
} aloop_watcher;

typedef struct {
    aloop_watcher reader;
    aloop_watcher writer;
    uint32_t mask;  /* ALOOP_READ/WRITE with a watcher */
    uint32_t armed; /* ALOOP_READ/WRITE the poller reports now */
    bool oneshot;   /* the poller's registration is ALOOP_ONESHOT */
    bool in_poller; /* the poller holds a registration, maybe disarmed */
} aloop_fdslot;

typedef struct {
    aloop_fdslot *slots;
    int cap;
    int nregistered; /* fds with a non-zero mask */
} aloop_fdtable;

static inline aloop_fdslot *
aloop_fdtable_get(aloop_fdtable *t, int fd)
{
    return (fd >= 0 && fd < t->cap) ? &t->slots[fd] : NULL;
}
/* NULL (errno set) for a closed fd or no memory. */
aloop_fdslot *
aloop_fdtable_ensure(aloop_fdtable *t, int fd);
void
aloop_fdtable_clear(aloop_fdtable *t);
int
aloop_fdtable_traverse(aloop_fdtable *t, visitproc visit, void *arg);

/* ------------------------------------------------------------------ loop.c */
struct LoopObj {
    PyObject_HEAD aloop_state *state;
    PyObject *dict;
    PyObject *weakreflist;

    aloop_readyq ready;
    aloop_timerheap timers;
    Py_ssize_t timer_cancelled_count;
    uint64_t timer_seq;
    aloop_fdtable fds;
    PyObject *io_fileobjs; /* fd -> file object given to add_reader/writer */
    aloop_poller poller;
    aloop_poll_event *events;
    int events_cap;

    char *read_buf;  /* ALOOP_READ_BUF_SIZE scratch: use aloop_loop_read_buf */
    PyObject *spare; /* spare.c: a bytes object to reuse, owned, or NULL */
    aloop_sockaddr_memo sockname_memo; /* transports' local addresses */
    Py_ssize_t sock_recv_last;         /* bytes the last sock_recv brought */
    /* loopclass.c: ALOOP_HOOK masks of the methods overridden by the
     * class (valid while the type's version tag is class_tag) and by
     * instance attributes (mock.patch.object) */
    unsigned int class_tag;
    unsigned int class_hooks;
    unsigned int attr_hooks;

    int wakeup_fd; /* eventfd for call_soon_threadsafe */
    bool polling;  /* inside (or about to enter) the poller wait */
    bool wakeup_pending;

    int sig_rfd; /* socketpair whose write end is signal.set_wakeup_fd */
    int sig_wfd;
    PyObject *signal_handlers; /* dict: signum -> Handle (_signal_handlers) */

    PyObject *current_handle;
    PyObject *old_agen_hooks;
    double clock_resolution;
    double slow_callback_duration;
    unsigned long thread_id;
    bool running;
    bool closed;
    bool stopping;
    bool debug;
};

/* Whether `owner` is fd's reader (which == ALOOP_READ) or writer now.  A
 * readiness event queued for a watcher removed since must not run, as the
 * stdlib's cancelled reader/writer Handle does not. */
static inline bool
aloop_loop_watches(LoopObj *loop, int fd, uint32_t which, PyObject *owner)
{
    aloop_fdslot *slot = aloop_fdtable_get(&loop->fds, fd);
    return slot != NULL && (which == ALOOP_READ ? slot->reader.obj
                                                : slot->writer.obj) == owner;
}

int
aloop_loop_setup_types(PyObject *module, aloop_state *st);
double
aloop_loop_time(void);
/* The loop's ALOOP_READ_BUF_SIZE read buffer; NULL with MemoryError. */
char *
aloop_loop_read_buf(LoopObj *loop);
/* How much to receive from `fd` straight into a new bytes object instead
 * of through the scratch buffer: FIONREAD's count capped at `limit`, when
 * the previous read of this kind brought ALOOP_DIRECT_READ or more (`last`)
 * and at least that much is queued now; else 0.  No ioctl after small
 * reads, so they pay nothing. */
Py_ssize_t
aloop_direct_read_size(int fd, Py_ssize_t last, Py_ssize_t limit);
int
aloop_loop_check_closed(LoopObj *loop);
int
aloop_loop_check_thread(LoopObj *loop);
int
aloop_loop_is_coroutine(LoopObj *loop, PyObject *cb); /* -1/0/1 */
int
aloop_loop_check_callback(LoopObj *loop, PyObject *cb, const char *meth);
int
aloop_loop_push_handle(LoopObj *loop, PyObject *handle);
/* loop.call_exception_handler(context) as the stdlib calls it: from the
 * `except` block that caught context["exception"] (if any), which is the
 * handled exception meanwhile -- sys.exception() and logging.exception()
 * in a handler see it, and what the handler raises chains to it. */
int
aloop_call_exception_handler(aloop_state *st, PyObject *loop,
                             PyObject *context);
int
aloop_loop_call_exception_handler(LoopObj *loop, PyObject *context);
/* Report the current exception through call_exception_handler with
 * `message`; KeyboardInterrupt/SystemExit are left set and -1 returned. */
int
aloop_loop_report_exception(LoopObj *loop, const char *message);
/* self.time(), through an overridden time() too.  0 or -1. */
int
aloop_loop_now(LoopObj *loop, double *now);
/* Debug mode: "Executing <handle> took <dt> seconds", as _run_once logs. */
int
aloop_loop_warn_slow(LoopObj *loop, PyObject *handle, double dt);
/* Add/remove an internal watcher (fn != NULL) or a Handle (fn == NULL).
 * Take a new reference to obj; the replaced watcher is returned as a new
 * reference in *old (may be NULL).  -errno if the poller refused: an
 * addition is then undone (*old NULL), but a removal stands (*old set)
 * and also drops the fd's other watcher, as the stdlib's selector does. */
int
aloop_loop_set_watcher(LoopObj *loop, int fd, uint32_t which, PyObject *obj,
                       aloop_event_fn fn, PyObject **old);
/* The same for an internal watcher that is called once per wait.  When
 * called it must remove itself or, to wait on, call aloop_loop_rearm():
 * either re-arms the poller for the fd's other watcher too. */
int
aloop_loop_set_oneshot_watcher(LoopObj *loop, int fd, uint32_t which,
                               PyObject *obj, aloop_event_fn fn,
                               PyObject **old);
/* Arm the poller again for the fd's watchers; 0 or -errno. */
int
aloop_loop_rearm(LoopObj *loop, int fd);
void
aloop_loop_wakeup(LoopObj *loop);
PyObject *
aloop_errno_error(int neg_errno); /* sets OSError, returns NULL */

/* ----------------------------------------------------------------- spare.c */
/* A new bytes object holding buf[0:n] (n > 0): the loop's spare when its
 * allocation fits, else a fresh one. */
PyObject *
aloop_spare_bytes(LoopObj *loop, const char *buf, Py_ssize_t n);
/* Drop a reference to what aloop_spare_bytes() returned, once the callback
 * it was handed to has returned: kept as the spare if nobody else holds
 * it. */
void
aloop_spare_release(LoopObj *loop, PyObject *data);

/* ------------------------------------------------------------------ loop_io.c
 * add_reader & co: Python-facing readiness API. */
extern PyMethodDef aloop_loop_io_methods[];
int
aloop_fileobj_to_fd(PyObject *fileobj); /* -1 with ValueError */
/* _ensure_fd_no_transport: RuntimeError if a live transport owns fd. */
int
aloop_loop_ensure_no_transport(LoopObj *loop, PyObject *fileobj);
int
aloop_loop_io_setup_types(PyObject *module, aloop_state *st);
PyObject *
aloop_loop_selector_view(LoopObj *loop); /* loop._selector */

/* ------------------------------------------------------------- loopclass.c
 * Loop methods the C paths bypass unless a subclass or an instance
 * attribute overrides them. */
enum {
    ALOOP_HOOK_TIME,
    ALOOP_HOOK_CREATE_FUTURE,
    ALOOP_HOOK_ACCEPT_CONNECTION,
    ALOOP_HOOK_ACCEPT_CONNECTION2,
    ALOOP_HOOK_MAKE_SOCKET_TRANSPORT,
    ALOOP_HOOK_RUN_ONCE,               /* run_forever's iteration */
    ALOOP_HOOK_CALL_AT,                /* call_later's */
    ALOOP_HOOK_TIMER_HANDLE_CANCELLED, /* TimerHandle.cancel()'s */
#if PY_VERSION_HEX >= 0x030D0000
    /* 3.13's run_forever calls these two for loop subclasses to reuse */
    ALOOP_HOOK_RUN_FOREVER_SETUP,
    ALOOP_HOOK_RUN_FOREVER_CLEANUP,
#endif
    ALOOP_HOOK_COUNT
};
#define ALOOP_HOOK(h) (1u << (h))
/* Whether any of `hooks` (a mask) is overridden: 1, 0, or -1. */
int
aloop_loop_overrides_recheck(LoopObj *loop, unsigned int hooks);
static inline int
aloop_loop_overrides(LoopObj *loop, unsigned int hooks)
{
    unsigned int tag = Py_TYPE(loop)->tp_version_tag;
    if (tag == 0 || tag != loop->class_tag) {
        return aloop_loop_overrides_recheck(loop, hooks);
    }
    return ((loop->class_hooks | loop->attr_hooks) & hooks) != 0;
}
/* From the loop's __setattr__/__delattr__: track instance overrides. */
void
aloop_loop_note_setattr(LoopObj *loop, PyObject *name, bool set);
/* After LoopType exists: the hooks' names and aloop.Loop's defaults. */
int
aloop_loopclass_setup(aloop_state *st);

/* ------------------------------------------------------------- sockclass.c
 * A socket.socket subclass that overrides one of `methods` (NULL-ended)
 * goes to the stdlib's Python code, which calls them: 1, 0, or -1. */
int
aloop_sock_overrides(aloop_state *st, PyObject *sock,
                     const char *const *methods);
/* selector_events.cls.name(*args, **kw) (selector_events.name if cls is
 * NULL), looked up now; kw is a dict or NULL. */
PyObject *
aloop_stdlib_call(aloop_state *st, const char *cls, const char *name,
                  PyObject *const *args, size_t nargs, PyObject *kw);

/* --------------------------------------------------------------- sockops.c */
extern PyMethodDef aloop_sockops_methods[];
int
aloop_sockops_setup_types(PyObject *module, aloop_state *st);

/* ------------------------------------------------------------ transport.c
 * What _SelectorTransport does, shared by the stream and datagram
 * transports: every transport struct starts with ALOOP_TRANSPORT_HEAD
 * (BaseTransport's _extra slot first) and gives its specifics in ops. */
typedef struct TransportObj TransportObj;
typedef struct {
    aloop_event_fn read_ready;    /* internal reader of fd */
    aloop_event_fn write_ready;   /* internal writer of fd */
    const char *write_ready_name; /* its method: "_write_ready" and so on */
    void (*clear_buffer)(TransportObj *t);
    /* look up and cache the protocol's methods; 0 or -1 */
    int (*set_protocol)(TransportObj *t, PyObject *protocol);
    void (*clear_protocol)(TransportObj *t);
    int (*traverse)(TransportObj *t, visitproc visit, void *arg);
    /* send what write() held back (see write_held); 0 or -1; NULL if the
     * transport never holds writes */
    int (*flush_held)(TransportObj *t);
} aloop_transport_ops;

#define ALOOP_TRANSPORT_HEAD                                                \
    PyObject_HEAD PyObject *extra; /* BaseTransport._extra: stays first */  \
    PyObject *fc_slots[4]; /* _FlowControlMixin slots: shadowed, unused */  \
    const aloop_transport_ops *ops;                                         \
    LoopObj *loop; /* NULL once connection_lost ran (stdlib: _loop None) */ \
    PyObject *sock;                                                         \
    PyObject *protocol;                                                     \
    PyObject *server;                                                       \
    PyObject *empty_waiter;                                                 \
    PyObject *waiter;   /* creator's waiter, until woken */                 \
    PyObject *lost_exc; /* argument of the pending connection_lost */       \
    /* contextvars Contexts the protocol's callbacks run in (see            \
     * transport.c): reading, writability, the queued connection_lost */    \
    PyObject *read_ctx;                                                     \
    PyObject *write_ctx;                                                    \
    PyObject *lost_ctx;                                                     \
    PyObject *dict;                                                         \
    PyObject *weakreflist;                                                  \
    Py_ssize_t buffer_size; /* > 0 iff data is buffered */                  \
    /* write buffer limits as integers (the floors of what was set,         \
     * clamped); *_limit holds what was set when that is not an exact int   \
     * in range (the stdlib keeps a float a float), else NULL */            \
    Py_ssize_t high_water;                                                  \
    Py_ssize_t low_water;                                                   \
    PyObject *high_limit;                                                   \
    PyObject *low_limit;                                                    \
    Py_ssize_t conn_lost;                                                   \
    Py_ssize_t max_size; /* the stdlib's recv() size (settable) */          \
    int fd;                                                                 \
    bool protocol_connected;                                                \
    bool closing;                                                           \
    bool paused;                                                            \
    bool eof;                                                               \
    bool protocol_paused;                                                   \
    /* the whole buffer is writes held back during a protocol callback and  \
     * not yet tried (no writer registered); flushed when it returns or     \
     * before anything observes the buffer */                               \
    bool write_held;

struct TransportObj {
    ALOOP_TRANSPORT_HEAD
};

extern PyMethodDef aloop_transport_methods[];
extern PyGetSetDef aloop_transport_getset[];
extern PyMemberDef aloop_transport_members[];
/* Create a transport type: a subclass of transports._FlowControlMixin
 * (and of transports.<also> if given, e.g. "DatagramTransport"), with the
 * shared methods plus `methods`; the base layout is checked first. */
PyTypeObject *
aloop_transport_make_type(PyObject *module, PyType_Spec *spec,
                          const char *also, PyMethodDef *methods,
                          PyGetSetDef *getset);
/* _SelectorTransport.__init__ plus the connection_made / start reading /
 * waiter events.  `t` is freshly allocated and zeroed beyond its header. */
int
aloop_transport_init(TransportObj *t, const aloop_transport_ops *ops,
                     LoopObj *loop, PyObject *sock, PyObject *protocol,
                     PyObject *waiter, PyObject *extra, PyObject *server);
int
aloop_transport_watch(TransportObj *t, uint32_t which, bool on);
int
aloop_transport_call_handler(TransportObj *t, const char *message,
                             PyObject *exc);
int
aloop_transport_force_close(TransportObj *t, PyObject *exc);
static inline int
aloop_transport_flush_held(TransportObj *t)
{
    return t->write_held ? t->ops->flush_held(t) : 0;
}
int
aloop_transport_fatal_error(TransportObj *t, PyObject *exc,
                            const char *message);
int
aloop_transport_fatal_current(TransportObj *t, const char *message);
int
aloop_transport_fatal_errno(TransportObj *t, int err, const char *message);
int
aloop_transport_maybe_pause(TransportObj *t);
int
aloop_transport_maybe_resume(TransportObj *t);
int
aloop_transport_lost_writes(TransportObj *t); /* write after lost */
PyObject *
aloop_transport_call_connection_lost(TransportObj *t, PyObject *exc);
int
aloop_transport_traverse(TransportObj *t, visitproc visit, void *arg);
void
aloop_transport_clear(TransportObj *t);
void
aloop_transport_dealloc(TransportObj *t);
void
aloop_transport_finalize(TransportObj *t);
PyObject *
aloop_transport_repr(TransportObj *t);

/* ---------------------------------------------------------------- stream.c */
extern PyMethodDef aloop_stream_loop_methods[];
int
aloop_stream_setup_types(PyObject *module, aloop_state *st);
PyObject *
aloop_stream_new(LoopObj *loop, PyObject *sock, PyObject *protocol,
                 PyObject *waiter, PyObject *extra, PyObject *server);

/* -------------------------------------------------------------- datagram.c */
extern PyMethodDef aloop_datagram_loop_methods[];
int
aloop_datagram_setup_types(PyObject *module, aloop_state *st);

/* ---------------------------------------------------------------- server.c */
extern PyMethodDef aloop_server_methods[];
int
aloop_server_setup_types(PyObject *module, aloop_state *st);

/* ---------------------------------------------------------- transportmap.c
 * loop._transports: fd -> transport, weak values. */
int
aloop_transportmap_setup_types(PyObject *module, aloop_state *st);
PyObject *
aloop_transportmap_new(aloop_state *st);
int
aloop_transportmap_check(aloop_state *st, PyObject *obj);
/* The live value (new reference), or NULL: absent or dead if no exception
 * is set. */
PyObject *
aloop_transportmap_get(PyObject *map, PyObject *key);
int
aloop_transportmap_set(PyObject *map, PyObject *key, PyObject *value);

/* -------------------------------------------------------------- sockaddr.c */
/* New reference, or NULL without an exception for an unknown family. */
PyObject *
aloop_sockaddr_to_python(const struct sockaddr *sa, unsigned int len);
/* The same through a memo of the last conversion (the memo lives in
 * LoopObj, which declares it). */
PyObject *
aloop_sockaddr_memo_get(aloop_sockaddr_memo *m, const struct sockaddr *sa,
                        unsigned int len);
void
aloop_sockaddr_memo_clear(aloop_sockaddr_memo *m);

/* --------------------------------------------------------------- signals.c */
extern PyMethodDef aloop_signal_methods[];
void
aloop_signals_close(LoopObj *loop); /* on loop close */

#endif /* ALOOP_H */
