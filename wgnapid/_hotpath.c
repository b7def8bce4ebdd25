/*
 * wgnapid._hotpath: the two loops wgnapid runs per link by the thousand, in C.
 *
 * Each has a Python reference implementation that gives the same answers on
 * every input (wgnapid/links.py: _link_messages_py; wgnapid/sysfs.py:
 * _pwrite_each_py), used when this module is not built or
 * WGNAPID_PURE_PYTHON=1 is set, and tested against it
 * (tests/unit/test_hotpath.py). Nothing here decides anything or proves an
 * identity: it parses bytes the kernel sent and writes to files already
 * opened under proven directories.
 *
 * link_messages(buf) -> list of (type, flags, seq, body)
 *     The netlink messages of one datagram, as wgnapid.links._messages walks
 *     them (a message shorter than its header or running past the buffer ends
 *     the walk). body: for RTM_NEWLINK/RTM_DELLINK, (ifindex, name, kind,
 *     address) as wgnapid.links.parse_link reads them (name and kind decoded
 *     as UTF-8 with surrogateescape, address bytes or None), or None when
 *     the message is too short for an ifinfomsg; for NLMSG_ERROR, the
 *     (negative) error number, or None when too short; else None.
 *     Costs ~0.5 us per message against ~15-20 us in Python (a tun link's
 *     message has ~32 attributes before IFLA_LINKINFO).
 *
 * pwrite_each(fds, data, max_written) -> (answers, tried)
 *     pwrite(fd, data, len(data), 0) on each fd of the list fds in order,
 *     without the GIL, until all were tried or max_written writes returned
 *     len(data). answers: [(index, result)] for every write the kernel did
 *     not refuse with EOPNOTSUPP, result the bytes written or -errno; tried:
 *     how many fds were written. EOPNOTSUPP is what a `threaded` write of a
 *     link without a NAPI instance gets (KERNEL-FACTS.md), thousands of
 *     times a second on a concentrator: one syscall and nothing else each.
 *     TypeError/OverflowError for fds that are not C ints.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define NLMSG_HDRLEN_ 16
#define IFINFOMSG_LEN 16
#define NLMSG_ERROR_ 2
#define RTM_NEWLINK_ 16
#define RTM_DELLINK_ 17
#define IFLA_ADDRESS_ 1
#define IFLA_IFNAME_ 3
#define IFLA_LINKINFO_ 18
#define IFLA_INFO_KIND_ 1
#define NLA_TYPE_MASK_ 0x3FFF

static uint16_t get_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int32_t get_i32(const unsigned char *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* wgnapid.links._cstring: up to the first NUL, UTF-8 with surrogateescape. */
static PyObject *cstring(const unsigned char *p, Py_ssize_t n)
{
    const unsigned char *nul = memchr(p, 0, (size_t)n);
    if (nul)
        n = nul - p;
    return PyUnicode_DecodeUTF8((const char *)p, n, "surrogateescape");
}

/* wgnapid.links.parse_link on buf[start:end]: a 4-tuple, or None when short. */
static PyObject *parse_link(const unsigned char *buf, Py_ssize_t offset, Py_ssize_t end)
{
    PyObject *name = NULL, *kind = NULL, *address = NULL, *out = NULL;
    int32_t ifindex;

    if (end - offset < IFINFOMSG_LEN)
        Py_RETURN_NONE;
    ifindex = get_i32(buf + offset + 4);
    offset += IFINFOMSG_LEN;
    while (offset + 4 <= end) {
        Py_ssize_t length = get_u16(buf + offset);
        unsigned attr = get_u16(buf + offset + 2) & NLA_TYPE_MASK_;
        Py_ssize_t stop;

        if (length < 4)
            break;
        stop = offset + length < end ? offset + length : end;
        if (attr == IFLA_IFNAME_) {
            Py_XDECREF(name);
            if (!(name = cstring(buf + offset + 4, stop - offset - 4)))
                goto fail;
        } else if (attr == IFLA_ADDRESS_) {
            Py_XDECREF(address);
            if (!(address = PyBytes_FromStringAndSize((const char *)buf + offset + 4, stop - offset - 4)))
                goto fail;
        } else if (attr == IFLA_LINKINFO_) {
            Py_ssize_t sub = offset + 4;
            while (sub + 4 <= stop) {
                Py_ssize_t slen = get_u16(buf + sub);
                unsigned stype = get_u16(buf + sub + 2) & NLA_TYPE_MASK_;
                if (slen < 4)
                    break;
                if (stype == IFLA_INFO_KIND_) {
                    Py_ssize_t sstop = sub + slen < stop ? sub + slen : stop;
                    Py_XDECREF(kind);
                    if (!(kind = cstring(buf + sub + 4, sstop - sub - 4)))
                        goto fail;
                    break;
                }
                sub += (slen + 3) & ~(Py_ssize_t)3;
            }
            if (name && PyUnicode_GET_LENGTH(name) > 0)
                break;
        }
        offset += (length + 3) & ~(Py_ssize_t)3;
    }
    if (!name && !(name = PyUnicode_New(0, 0)))
        goto fail;
    if (!kind && !(kind = PyUnicode_New(0, 0)))
        goto fail;
    if (!address) {
        address = Py_None;
        Py_INCREF(address);
    }
    out = Py_BuildValue("(iOOO)", (int)ifindex, name, kind, address);
fail:
    Py_XDECREF(name);
    Py_XDECREF(kind);
    Py_XDECREF(address);
    return out;
}

static PyObject *link_messages(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    PyObject *list, *item, *body;
    const unsigned char *buf;
    Py_ssize_t offset = 0, len;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    buf = view.buf;
    len = view.len;
    if (!(list = PyList_New(0)))
        goto fail_view;
    while (offset + NLMSG_HDRLEN_ <= len) {
        Py_ssize_t length = get_u32(buf + offset);
        unsigned mtype = get_u16(buf + offset + 4), flags = get_u16(buf + offset + 6);
        uint32_t seq = get_u32(buf + offset + 8);
        Py_ssize_t start = offset + NLMSG_HDRLEN_, end;

        if (length < NLMSG_HDRLEN_ || length > len - offset)
            break; /* malformed or cut: nothing after it can be trusted */
        end = offset + length;
        if (mtype == RTM_NEWLINK_ || mtype == RTM_DELLINK_) {
            body = parse_link(buf, start, end);
        } else if (mtype == NLMSG_ERROR_ && end - start >= 4) {
            body = PyLong_FromLong(get_i32(buf + start));
        } else {
            body = Py_None;
            Py_INCREF(body);
        }
        if (!body)
            goto fail_list;
        item = Py_BuildValue("(IIkN)", mtype, flags, (unsigned long)seq, body);
        if (!item || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            goto fail_list;
        }
        Py_DECREF(item);
        offset += (length + 3) & ~(Py_ssize_t)3;
    }
    PyBuffer_Release(&view);
    return list;
fail_list:
    Py_DECREF(list);
fail_view:
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *pwrite_each(PyObject *self, PyObject *args)
{
    PyObject *fds_obj, *answers = NULL, *out = NULL;
    Py_buffer data;
    Py_ssize_t max_written, n, i, tried = 0, written_full = 0, count = 0;
    int *fds = NULL;
    Py_ssize_t *idx = NULL, *res = NULL;

    if (!PyArg_ParseTuple(args, "O!y*n", &PyList_Type, &fds_obj, &data, &max_written))
        return NULL;
    n = PyList_GET_SIZE(fds_obj);
    fds = PyMem_Malloc(sizeof(int) * (size_t)(n ? n : 1));
    idx = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    res = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(n ? n : 1));
    if (!fds || !idx || !res) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PyList_GET_ITEM(fds_obj, i));
        if (fd == -1 && PyErr_Occurred())
            goto done;
        if (fd < INT32_MIN || fd > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "fd out of range");
            goto done;
        }
        fds[i] = (int)fd;
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n && written_full < max_written; i++) {
        ssize_t r;
        do
            r = pwrite(fds[i], data.buf, (size_t)data.len, 0);
        while (r < 0 && errno == EINTR);
        tried = i + 1;
        if (r < 0 && errno == EOPNOTSUPP)
            continue;
        idx[count] = i;
        res[count] = r < 0 ? -errno : r;
        count++;
        if (r == data.len)
            written_full++;
    }
    Py_END_ALLOW_THREADS
    if (!(answers = PyList_New(count)))
        goto done;
    for (i = 0; i < count; i++) {
        PyObject *t = Py_BuildValue("(nn)", idx[i], res[i]);
        if (!t)
            goto done;
        PyList_SET_ITEM(answers, i, t);
    }
    out = Py_BuildValue("(On)", answers, tried);
done:
    Py_XDECREF(answers);
    PyMem_Free(fds);
    PyMem_Free(idx);
    PyMem_Free(res);
    PyBuffer_Release(&data);
    return out;
}

static PyMethodDef methods[] = {
    {"link_messages", link_messages, METH_O,
     "link_messages(buf) -> [(type, flags, seq, body)]: see wgnapid/_hotpath.c."},
    {"pwrite_each", pwrite_each, METH_VARARGS,
     "pwrite_each(fds, data, max_written) -> (answers, tried): see wgnapid/_hotpath.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wgnapid._hotpath",
    "wgnapid's per-link loops in C (wgnapid/_hotpath.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hotpath(void)
{
    return PyModule_Create(&module);
}
