/*
 * trioalpaca._speedups: optional C versions of hot pure-Python helpers.
 *
 * raw_check(everywhere, sometimes, items) is the raw (msgpack) decoder's fast shape check,
 * the C twin of the loop trioalpaca._codec._make_raw_check generates: True if every element
 * of the list ``items`` is a dict whose "T" is a str, whose every key in the tuple
 * ``everywhere`` holds an int, and whose every key in the tuple ``sometimes`` holds an int or
 * is absent; else False (the decoder then takes its careful, element-by-element path). "str"
 * and "int" mean exactly those types (no subclasses, so no bool), as ``type(x) is int`` does
 * in the Python loop.
 *
 * The elements come from msgpack.unpackb, whose maps have str or bytes keys only; the loop
 * stays safe for other callers too (see raw_check).
 *
 * Items(refill) is an async iterator over blocks of ready items (raw replay's ``async for``).
 * Its ``it`` attribute is the current block's iterator; ``__anext__`` hands out that
 * iterator's next item through a small awaitable that completes at once (no coroutine, no
 * StopIteration on CPython's fast path) and, once the block is exhausted, returns
 * ``refill()``: a coroutine that loads the next block (setting ``it``) and returns its first
 * item, or raises StopAsyncIteration. It replaces an async generator, whose every item costs
 * an ``asend`` object and a StopIteration set and fetched.
 *
 * Without a C compiler the package installs without this module and uses the Python code;
 * TRIOALPACA_NO_SPEEDUPS=1 makes it use the Python loop even when the module is built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_T; /* "T", interned */

/* 1: element ``d`` (a dict) is plain, 0: it is not, -1: an error is set. Values are
   borrowed and only looked at before the next lookup. */
static int
element_plain(PyObject *d, PyObject *everywhere, PyObject *sometimes)
{
    PyObject *v;
    Py_ssize_t j;

    v = PyDict_GetItemWithError(d, str_T);
    if (v == NULL || !PyUnicode_CheckExact(v)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    for (j = 0; j < PyTuple_GET_SIZE(everywhere); j++) {
        v = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(everywhere, j));
        if (v == NULL || !PyLong_CheckExact(v)) {
            return PyErr_Occurred() ? -1 : 0;
        }
    }
    for (j = 0; j < PyTuple_GET_SIZE(sometimes); j++) {
        v = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(sometimes, j));
        if (v == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
        }
        else if (!PyLong_CheckExact(v)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
raw_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *everywhere, *sometimes, *items, *d;
    Py_ssize_t i;
    int plain;

    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "raw_check(everywhere, sometimes, items) takes 3 arguments");
        return NULL;
    }
    everywhere = args[0];
    sometimes = args[1];
    items = args[2];
    if (!PyTuple_CheckExact(everywhere) || !PyTuple_CheckExact(sometimes)) {
        PyErr_SetString(PyExc_TypeError, "raw_check: the key sets must be tuples of str");
        return NULL;
    }
    if (!PyList_CheckExact(items)) {
        Py_RETURN_FALSE;
    }
    /* (the size is read again each time and the element held: a key's __eq__, which a
       caller other than the decoder could bring, may run Python code that changes the list) */
    for (i = 0; i < PyList_GET_SIZE(items); i++) {
        d = PyList_GET_ITEM(items, i);
        if (!PyDict_CheckExact(d)) {
            Py_RETURN_FALSE;
        }
        Py_INCREF(d);
        plain = element_plain(d, everywhere, sometimes);
        Py_DECREF(d);
        if (plain < 0) {
            return NULL;
        }
        if (plain == 0) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

/* ---------------------------------------------------------------- Ready: a done awaitable */

typedef struct {
    PyObject_HEAD
    PyObject *value; /* NULL once awaited */
} ReadyObject;

static PyTypeObject ReadyType;

static void
ready_dealloc(ReadyObject *self)
{
    Py_XDECREF(self->value);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ready_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static int
ready_take(ReadyObject *self, PyObject **value)
{
    if (self->value == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited item");
        return -1;
    }
    *value = self->value; /* the reference moves to the caller */
    self->value = NULL;
    return 0;
}

/* `await` on CPython >= 3.10 without a tracer: the value, no exception */
static PySendResult
ready_send(PyObject *self, PyObject *arg, PyObject **result)
{
    (void)arg;
    if (ready_take((ReadyObject *)self, result) < 0) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    return PYGEN_RETURN;
}

/* the generic iterator protocol (a tracer, yield from): StopIteration(value) */
static PyObject *
ready_next(PyObject *self)
{
    PyObject *value, *exc;

    if (ready_take((ReadyObject *)self, &value) < 0) {
        return NULL;
    }
    exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    Py_DECREF(value);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_StopIteration, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *
ready_send_method(PyObject *self, PyObject *arg)
{
    if (arg != Py_None) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a ready item");
        return NULL;
    }
    return ready_next(self);
}

static PyMethodDef ready_methods[] = {
    {"send", (PyCFunction)ready_send_method, METH_O, "Complete: raises StopIteration(item)."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods ready_as_async = {
    ready_await, /* am_await */
    NULL,        /* am_aiter */
    NULL,        /* am_anext */
    ready_send,  /* am_send */
};

static PyTypeObject ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trioalpaca._speedups.Ready",
    .tp_basicsize = sizeof(ReadyObject),
    .tp_dealloc = (destructor)ready_dealloc,
    .tp_as_async = &ready_as_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An awaitable that completes at once with one item (made by Items).",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = ready_next,
    .tp_methods = ready_methods,
};

/* ------------------------------------------------ Items: async iteration over ready blocks */

typedef struct {
    PyObject_HEAD
    PyObject *it;     /* the current block's iterator, or NULL */
    PyObject *refill; /* () -> coroutine: the next block's first item */
} ItemsObject;

static int
items_traverse(ItemsObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->it);
    Py_VISIT(self->refill);
    return 0;
}

static int
items_clear(ItemsObject *self)
{
    Py_CLEAR(self->it);
    Py_CLEAR(self->refill);
    return 0;
}

static void
items_dealloc(ItemsObject *self)
{
    PyObject_GC_UnTrack(self);
    items_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
items_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *refill;
    ItemsObject *self;
    static char *kwlist[] = {"refill", NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Items", kwlist, &refill)) {
        return NULL;
    }
    if (!PyCallable_Check(refill)) {
        PyErr_SetString(PyExc_TypeError, "Items(refill): refill must be callable");
        return NULL;
    }
    self = (ItemsObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(refill);
    self->refill = refill;
    self->it = NULL;
    return (PyObject *)self;
}

static PyObject *
items_aiter(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PyObject *
items_anext(ItemsObject *self)
{
    PyObject *item = NULL, *it = self->it;
    ReadyObject *ready;

    if (it != NULL) {
        /* held while it runs: a Python iterator could replace self->it meanwhile */
        Py_INCREF(it);
        item = Py_TYPE(it)->tp_iternext(it);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
                    Py_DECREF(it);
                    return NULL;
                }
                PyErr_Clear();
            }
            if (self->it == it) {
                Py_CLEAR(self->it);
            }
        }
        Py_DECREF(it);
    }
    if (item == NULL) {
        return PyObject_CallNoArgs(self->refill);
    }
    ready = PyObject_New(ReadyObject, &ReadyType);
    if (ready == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    ready->value = item;
    return (PyObject *)ready;
}

static PyObject *
items_get_it(ItemsObject *self, void *closure)
{
    (void)closure;
    if (self->it == NULL) {
        Py_RETURN_NONE;
    }
    Py_INCREF(self->it);
    return self->it;
}

static int
items_set_it(ItemsObject *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->it);
        return 0;
    }
    if (!PyIter_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Items.it must be an iterator (or None)");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->it, value);
    return 0;
}

static PyGetSetDef items_getset[] = {
    {"it", (getter)items_get_it, (setter)items_set_it,
     "The current block's iterator (None: the next item comes from refill()).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods items_as_async = {
    NULL,                    /* am_await */
    items_aiter,             /* am_aiter */
    (unaryfunc)items_anext,  /* am_anext */
    NULL,                    /* am_send */
};

static PyTypeObject ItemsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trioalpaca._speedups.Items",
    .tp_basicsize = sizeof(ItemsObject),
    .tp_dealloc = (destructor)items_dealloc,
    .tp_as_async = &items_as_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Items(refill): async iteration over blocks of ready items (see the module doc).",
    .tp_traverse = (traverseproc)items_traverse,
    .tp_clear = (inquiry)items_clear,
    .tp_getset = items_getset,
    .tp_new = items_new,
};

static PyMethodDef speedups_methods[] = {
    {"raw_check", (PyCFunction)(void (*)(void))raw_check, METH_FASTCALL,
     "raw_check(everywhere, sometimes, items) -> bool\n\n"
     "The raw decoder's fast shape check (see trioalpaca._codec)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "trioalpaca._speedups",
    "Optional C versions of trioalpaca's hot helpers (see trioalpaca._codec).",
    -1,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;

    str_T = PyUnicode_InternFromString("T");
    if (str_T == NULL) {
        return NULL;
    }

    if (PyType_Ready(&ReadyType) < 0 || PyType_Ready(&ItemsType) < 0) {
        return NULL;
    }
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&ItemsType);
    if (PyModule_AddObject(module, "Items", (PyObject *)&ItemsType) < 0) {
        Py_DECREF(&ItemsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
