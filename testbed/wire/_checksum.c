/*
 * The one's-complement sum of RFC 1071 in C, for testbed.wire.checksum.
 *
 * Every segment the python stack sends and every payload a general-path middlebox re-encodes is
 * summed; the pure-Python sum (one big integer modulo 0xFFFF) costs about 2.4 us for a
 * full-sized segment, about 4 % of the core the python stack runs on at 2 x 94 Mbit/s.
 *
 * Same contract as the Python version it replaces: the folded, not inverted, 16-bit sum of the
 * big-endian words of `data` (an odd last byte padded with a zero on the right) plus `initial`,
 * 0 only when both are zero (a non-zero sum folds to 0xFFFF, "negative zero", never to 0).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Sum of the native-order 16-bit words of buf (an odd last byte as the big-endian word b << 8),
 * not folded. Per RFC 1071 2(B) the sum of native words is the byte-swapped sum of big-endian
 * words on a little-endian machine; the caller swaps after folding. */
static uint64_t native_word_sum(const unsigned char *buf, Py_ssize_t len)
{
    uint64_t sum = 0;
    uint32_t word32;
    uint16_t word16;
    while (len >= 4) {
        memcpy(&word32, buf, 4);
        sum += word32;
        buf += 4;
        len -= 4;
    }
    if (len >= 2) {
        memcpy(&word16, buf, 2);
        sum += word16;
        buf += 2;
        len -= 2;
    }
    if (len) {
        unsigned char pair[2] = {buf[0], 0};
        memcpy(&word16, pair, 2);
        sum += word16;
    }
    return sum;
}

static uint64_t fold16(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return sum;
}

static PyObject *ones_complement_sum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "ones_complement_sum(data, initial=0)");
        return NULL;
    }
    uint64_t initial = 0;
    if (nargs == 2) {
        initial = PyLong_AsUnsignedLongLong(args[1]);
        if (initial == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
        if (initial >> 48) {
            PyErr_SetString(PyExc_OverflowError, "ones_complement_sum: initial must be below 2**48");
            return NULL;
        }
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    /* the GIL is kept: for a segment, releasing it would cost more than the sum */
    uint64_t sum = fold16(native_word_sum((const unsigned char *)view.buf, view.len));
    PyBuffer_Release(&view);
#if PY_LITTLE_ENDIAN
    sum = ((sum & 0xFF) << 8) | (sum >> 8);
#endif
    return PyLong_FromUnsignedLongLong(fold16(sum + initial));
}

static PyMethodDef methods[] = {
    {"ones_complement_sum", (PyCFunction)(void (*)(void))ones_complement_sum, METH_FASTCALL,
     "16-bit one's-complement sum of data (odd length padded with a zero byte) plus initial."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "testbed.wire._checksum",
    "RFC 1071 one's-complement sum in C (see testbed/wire/checksum.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__checksum(void)
{
    return PyModule_Create(&module);
}
