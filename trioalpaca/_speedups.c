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
 * The elements come from msgpack.unpackb, whose maps have str or bytes keys only, so the
 * lookups never run Python code and the borrowed references stay valid.
 *
 * Without a C compiler the package installs without this module and uses the Python loop;
 * TRIOALPACA_NO_SPEEDUPS=1 makes it use the Python loop even when the module is built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_T; /* "T", interned */

/* value of ``key`` in dict ``d`` (borrowed), NULL if absent or on an error */
#define LOOKUP(d, key) PyDict_GetItemWithError((d), (key))

static PyObject *
raw_check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *everywhere, *sometimes, *items, *d, *v;
    Py_ssize_t i, j, n, n_everywhere, n_sometimes;

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
    n_everywhere = PyTuple_GET_SIZE(everywhere);
    n_sometimes = PyTuple_GET_SIZE(sometimes);
    n = PyList_GET_SIZE(items);
    for (i = 0; i < n; i++) {
        d = PyList_GET_ITEM(items, i);
        if (!PyDict_CheckExact(d)) {
            Py_RETURN_FALSE;
        }
        v = LOOKUP(d, str_T);
        if (v == NULL || !PyUnicode_CheckExact(v)) {
            goto not_plain;
        }
        for (j = 0; j < n_everywhere; j++) {
            v = LOOKUP(d, PyTuple_GET_ITEM(everywhere, j));
            if (v == NULL || !PyLong_CheckExact(v)) {
                goto not_plain;
            }
        }
        for (j = 0; j < n_sometimes; j++) {
            v = LOOKUP(d, PyTuple_GET_ITEM(sometimes, j));
            if (v == NULL) {
                if (PyErr_Occurred()) {
                    return NULL;
                }
                continue;
            }
            if (!PyLong_CheckExact(v)) {
                goto not_plain;
            }
        }
    }
    Py_RETURN_TRUE;

not_plain:
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

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
    str_T = PyUnicode_InternFromString("T");
    if (str_T == NULL) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
