/* _qkf: the CPython extension under the Python module qkf (python/qkf/__init__.py), a thin layer
 * over the public C API (include/qkf/qkf.h) and nothing else.
 *
 * Inputs are read in place through the buffer protocol (a C-contiguous float32 numpy array is
 * not copied); outputs are copied out of the result handle into bytes (logits, small) and Python
 * ints and floats. The GIL is released while qkf computes; the training callback takes it back
 * for each event. Every failure raises qkf.Error with the library's message (and .code). The
 * numpy C API is not used, so the module builds with python3-dev alone. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include <qkf/qkf.h>

static PyObject *QkfError;

static PyObject *raise_qkf(int rc)
{
    PyObject *args = Py_BuildValue("(s)", qkf_error_message());
    if (!args)
        return NULL;
    PyObject *e = PyObject_Call(QkfError, args, NULL);
    Py_DECREF(args);
    if (!e)
        return NULL;
    PyObject *code = PyLong_FromLong(rc);
    if (code) {
        PyObject_SetAttrString(e, "code", code);
        Py_DECREF(code);
    }
    PyErr_SetObject(QkfError, e);
    Py_DECREF(e);
    return NULL;
}

/* ---- Net --------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD qkf_net_t *net;
    PyThread_type_lock lock; /* one run at a time on a network */
} NetObject;

static void Net_dealloc(NetObject *self)
{
    qkf_net_free(self->net);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Net_init(NetObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *pathobj;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&", kwlist, PyUnicode_FSConverter, &pathobj))
        return -1;
    const char *path = PyBytes_AS_STRING(pathobj);
    qkf_net_t *net = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_net_load(path, &net);
    Py_END_ALLOW_THREADS
    Py_DECREF(pathobj);
    if (rc) {
        raise_qkf(rc);
        return -1;
    }
    qkf_net_free(self->net);
    self->net = net;
    if (!self->lock && !(self->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int check_net(NetObject *self)
{
    if (!self->net) {
        PyErr_SetString(QkfError, "network not loaded");
        return -1;
    }
    return 0;
}

static PyObject *Net_config(NetObject *self, PyObject *unused)
{
    (void)unused;
    if (check_net(self))
        return NULL;
    qkf_net_config_t c;
    qkf_net_config(self->net, &c);
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:d,s:i,s:i,s:s}", "variant", c.variant,
                         "img_size", c.img_size, "in_channels", c.in_channels, "num_classes",
                         c.num_classes, "embed_dims", c.embed_dims, "num_heads", c.num_heads,
                         "mlp_ratio", (double)c.mlp_ratio, "depths", c.depths, "T", c.T,
                         "qk_attn", c.qk_attn);
}

static PyObject *Net_num_parameters(NetObject *self, PyObject *unused)
{
    (void)unused;
    if (check_net(self))
        return NULL;
    return PyLong_FromLongLong(qkf_net_num_parameters(self->net));
}

static PyObject *Net_layers(NetObject *self, PyObject *unused)
{
    (void)unused;
    if (check_net(self))
        return NULL;
    int n = qkf_net_num_layers(self->net);
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (int l = 0; l < n; l++) {
        PyObject *t = Py_BuildValue("(sL)", qkf_net_layer_name(self->net, l),
                                    (long long)qkf_net_layer_neurons(self->net, l));
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, l, t);
    }
    return list;
}

static PyObject *Net_save(NetObject *self, PyObject *args)
{
    PyObject *pathobj;
    if (check_net(self) || !PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &pathobj))
        return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_net_save(self->net, PyBytes_AS_STRING(pathobj));
    Py_END_ALLOW_THREADS
    Py_DECREF(pathobj);
    if (rc)
        return raise_qkf(rc);
    Py_RETURN_NONE;
}

static int parse_mode(const char *mode, int *out)
{
    if (!strcmp(mode, "dense"))
        *out = QKF_MODE_DENSE;
    else if (!strcmp(mode, "event"))
        *out = QKF_MODE_EVENT;
    else {
        PyErr_Format(PyExc_ValueError, "mode '%s' is not an engine (dense or event)", mode);
        return -1;
    }
    return 0;
}

static PyObject *result_to_tuple(qkf_net_t *net, qkf_result_t *r)
{
    int64_t B = qkf_result_samples(r);
    qkf_net_config_t c;
    qkf_net_config(net, &c);
    int n = qkf_net_num_layers(net);
    PyObject *logits = PyBytes_FromStringAndSize((const char *)qkf_result_logits(r),
                                                 (Py_ssize_t)(B * c.num_classes * 4));
    PyObject *counts = PyList_New(n), *rates = PyList_New(n), *stats = NULL, *out = NULL;
    PyObject *logits_int = NULL;
    if (!logits || !counts || !rates)
        goto done;
    const int64_t *sc = qkf_result_spike_counts(r);
    for (int l = 0; l < n; l++) {
        PyList_SET_ITEM(counts, l, PyLong_FromLongLong(sc[l]));
        PyList_SET_ITEM(rates, l, PyFloat_FromDouble(qkf_result_firing_rate(r, l)));
    }
    qkf_stats_t s;
    qkf_result_stats(r, &s);
    if (s.has_stats) {
        PyObject *nodes = PyList_New(s.n_nodes);
        if (!nodes)
            goto done;
        for (int i = 0; i < s.n_nodes; i++) {
            qkf_node_stats_t ns;
            qkf_result_node(r, i, &ns);
            PyObject *d = Py_BuildValue("{s:s,s:s,s:i,s:L,s:L,s:L,s:L,s:d}", "name", ns.name,
                                        "kind", ns.kind, "layer", ns.layer, "accumulates",
                                        (long long)ns.accumulates, "macs", (long long)ns.macs,
                                        "in_events", (long long)ns.in_events, "out_spikes",
                                        (long long)ns.out_spikes, "energy_j", ns.energy_j);
            if (!d) {
                Py_DECREF(nodes);
                goto done;
            }
            PyList_SET_ITEM(nodes, i, d);
        }
        stats = Py_BuildValue("{s:L,s:L,s:L,s:L,s:d,s:N}", "accumulates",
                              (long long)s.accumulates, "macs", (long long)s.macs, "in_events",
                              (long long)s.in_events, "out_spikes", (long long)s.out_spikes,
                              "energy_j", s.energy_j, "nodes", nodes);
        if (!stats)
            goto done;
    } else {
        stats = Py_None;
        Py_INCREF(stats);
    }
    const int64_t *li = qkf_result_logits_int(r);
    if (li) {
        if (!(logits_int = PyBytes_FromStringAndSize((const char *)li,
                                                     (Py_ssize_t)(B * c.num_classes * 8))))
            goto done;
    } else {
        logits_int = Py_None;
        Py_INCREF(logits_int);
    }
    out = Py_BuildValue("(LiOOOOdO)", (long long)B, c.num_classes, logits, counts, rates, stats,
                        qkf_result_seconds(r), logits_int);
done:
    Py_XDECREF(logits_int);
    Py_XDECREF(logits);
    Py_XDECREF(counts);
    Py_XDECREF(rates);
    Py_XDECREF(stats);
    return out;
}

static PyObject *Net_run(NetObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"x",     "shape", "mode",   "batch",        "tb_compat", "conv",
                             "stats", "e_ac",  "e_mac",  "trace",        "record",    "force",
                             "raw",   "trace_buffer_mb", "hw", NULL};
    PyObject *x, *shape, *record = Py_None, *trace = Py_None, *hw = Py_None;
    const char *mode = "dense", *conv = NULL;
    int batch = 32, tb = 0, stats = 0, force = 0, raw = 0;
    long buffer_mb = 64;
    double e_ac = 0.9, e_mac = 4.6;
    if (check_net(self) ||
        !PyArg_ParseTupleAndKeywords(args, kw, "OO|sipzpddOOpplO", kwlist, &x, &shape, &mode,
                                     &batch, &tb, &conv, &stats, &e_ac, &e_mac, &trace, &record,
                                     &force, &raw, &buffer_mb, &hw))
        return NULL;
    qkf_run_opts_t o;
    qkf_run_opts_init(&o);
    if (parse_mode(mode, &o.mode))
        return NULL;
    o.batch = batch, o.tb_compat = tb, o.conv = conv, o.stats = stats, o.e_ac = e_ac;
    o.e_mac = e_mac, o.trace_force = force, o.trace_raw = raw, o.trace_buffer_mb = buffer_mb;
    int64_t sh[5];
    int ndim = (int)PySequence_Size(shape);
    if (ndim < 1 || ndim > 5) {
        PyErr_SetString(PyExc_ValueError, "shape must have 1 to 5 dimensions");
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        PyObject *v = PySequence_GetItem(shape, i);
        if (!v)
            return NULL;
        sh[i] = PyLong_AsLongLong(v);
        Py_DECREF(v);
        if (sh[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    PyObject *tpath = NULL, *hwpath = NULL, *rec_bytes[64];
    const char *recs[64];
    int nrec = 0;
    PyObject *res = NULL;
    Py_buffer view;
    memset(&view, 0, sizeof view);
    if (trace != Py_None) {
        if (!PyUnicode_FSConverter(trace, &tpath))
            return NULL;
        o.trace = PyBytes_AS_STRING(tpath);
    }
    if (hw != Py_None) { /* a bundled profile's name or a profile file */
        if (!PyUnicode_FSConverter(hw, &hwpath))
            goto out;
        o.hw = PyBytes_AS_STRING(hwpath);
    }
    if (record != Py_None) {
        PyObject *seq = PySequence_Fast(record, "record must be a list of strings");
        if (!seq)
            goto out;
        Py_ssize_t nr = PySequence_Fast_GET_SIZE(seq);
        if (nr > 64) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "at most 64 record specs");
            goto out;
        }
        for (Py_ssize_t i = 0; i < nr; i++) {
            PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyUnicode_Check(it)) {
                Py_DECREF(seq);
                PyErr_SetString(PyExc_TypeError, "record specs must be strings");
                goto out;
            }
            rec_bytes[nrec] = PyUnicode_AsUTF8String(it);
            if (!rec_bytes[nrec]) {
                Py_DECREF(seq);
                goto out;
            }
            recs[nrec] = PyBytes_AS_STRING(rec_bytes[nrec]);
            nrec++;
        }
        Py_DECREF(seq);
        o.record = recs, o.n_record = nrec;
    }
    if (PyObject_GetBuffer(x, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto out;
    if (view.itemsize != 4 || !view.format || strcmp(view.format, "f") != 0) {
        PyErr_SetString(PyExc_TypeError, "x must be a C-contiguous float32 buffer");
        goto out;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= sh[i];
    if (n * 4 != (int64_t)view.len) {
        PyErr_SetString(PyExc_ValueError, "shape does not match the buffer's size");
        goto out;
    }
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        PyErr_SetString(QkfError, "this model is running in another thread");
        goto out;
    }
    qkf_result_t *r = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_net_run(self->net, view.buf, sh, ndim, &o, &r);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    if (rc) {
        raise_qkf(rc);
        goto out;
    }
    res = result_to_tuple(self->net, r);
    qkf_result_free(r);
out:
    if (view.obj)
        PyBuffer_Release(&view);
    for (int i = 0; i < nrec; i++)
        Py_DECREF(rec_bytes[i]);
    Py_XDECREF(tpath);
    Py_XDECREF(hwpath);
    return res;
}

static PyObject *Net_evaluate(NetObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", "mode", "limit", "batch", "tb_compat", "conv", "hw", NULL};
    const char *data, *mode = "dense", *conv = NULL, *hw = NULL;
    long long limit = 0;
    int batch = 100, tb = 0;
    if (check_net(self) || !PyArg_ParseTupleAndKeywords(args, kw, "s|sLipzz", kwlist, &data,
                                                        &mode, &limit, &batch, &tb, &conv, &hw))
        return NULL;
    qkf_run_opts_t o;
    qkf_run_opts_init(&o);
    if (parse_mode(mode, &o.mode))
        return NULL;
    o.batch = batch, o.tb_compat = tb, o.conv = conv, o.hw = hw;
    double acc = 0.0;
    int64_t count = 0;
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        PyErr_SetString(QkfError, "this model is running in another thread");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_net_evaluate(self->net, data, limit, &o, &acc, &count);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    if (rc)
        return raise_qkf(rc);
    return Py_BuildValue("(dL)", acc, (long long)count);
}

static PyObject *Net_is_quantized(NetObject *self, PyObject *unused)
{
    (void)unused;
    if (check_net(self))
        return NULL;
    return PyBool_FromLong(qkf_net_is_quantized(self->net));
}

static PyObject *Net_profile_name(NetObject *self, PyObject *unused)
{
    (void)unused;
    if (check_net(self))
        return NULL;
    const char *name = qkf_net_profile_name(self->net);
    if (!name)
        Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

static PyTypeObject NetType;

/* A new Net around a network handle (taken over). */
static PyObject *wrap_net(qkf_net_t *net)
{
    NetObject *o = (NetObject *)NetType.tp_alloc(&NetType, 0);
    if (!o) {
        qkf_net_free(net);
        return NULL;
    }
    o->net = net;
    if (!(o->lock = PyThread_allocate_lock())) {
        Py_DECREF(o);
        return PyErr_NoMemory();
    }
    return (PyObject *)o;
}

static PyObject *Net_quantize(NetObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"hw", "calib", "data", "headroom", "clip_bias", NULL};
    PyObject *hw;
    long calib = 0;
    const char *data = NULL;
    double headroom = 0.0;
    int clip = 0;
    if (check_net(self) || !PyArg_ParseTupleAndKeywords(args, kw, "O&|lzdp", kwlist,
                                                        PyUnicode_FSConverter, &hw, &calib, &data,
                                                        &headroom, &clip))
        return NULL;
    qkf_quant_opts_t o;
    qkf_quant_opts_init(&o);
    o.calib = calib, o.clip_bias = clip;
    if (data)
        o.data = data;
    if (headroom != 0.0)
        o.headroom = headroom;
    qkf_profile_t *p = NULL;
    qkf_net_t *q = NULL;
    int rc;
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_DECREF(hw);
        PyErr_SetString(QkfError, "this model is running in another thread");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_profile_load(PyBytes_AS_STRING(hw), &p);
    if (!rc)
        rc = qkf_net_quantize(self->net, p, &o, &q);
    qkf_profile_free(p);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    Py_DECREF(hw);
    if (rc)
        return raise_qkf(rc);
    return wrap_net(q);
}

static PyMethodDef Net_methods[] = {
    {"is_quantized", (PyCFunction)Net_is_quantized, METH_NOARGS,
     "True for an integer network (a quantised checkpoint)."},
    {"profile_name", (PyCFunction)Net_profile_name, METH_NOARGS,
     "The profile an integer network was quantised for, or None."},
    {"quantize", (PyCFunction)(void (*)(void))Net_quantize, METH_VARARGS | METH_KEYWORDS,
     "A new integer Net quantised for a profile."},
    {"config", (PyCFunction)Net_config, METH_NOARGS, "The model configuration as a dict."},
    {"num_parameters", (PyCFunction)Net_num_parameters, METH_NOARGS, "Trainable parameters."},
    {"layers", (PyCFunction)Net_layers, METH_NOARGS, "[(LIF layer name, neurons per sample)]."},
    {"save", (PyCFunction)Net_save, METH_VARARGS, "Writes a checkpoint."},
    {"run", (PyCFunction)(void (*)(void))Net_run, METH_VARARGS | METH_KEYWORDS,
     "Runs a batch: (B, K, logits bytes, counts, rates, stats, seconds)."},
    {"evaluate", (PyCFunction)(void (*)(void))Net_evaluate, METH_VARARGS | METH_KEYWORDS,
     "Accuracy on a dataset's test split: (accuracy, count)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NetType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "qkf._qkf.Net",
    .tp_basicsize = sizeof(NetObject),
    .tp_dealloc = (destructor)Net_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A loaded QKFormer checkpoint (qkf_net_t).",
    .tp_methods = Net_methods,
    .tp_init = (initproc)Net_init,
    .tp_new = PyType_GenericNew,
};

/* ---- training -------------------------------------------------------------------------------- */

typedef struct {
    PyObject *callback; /* or None */
    int failed;         /* the callback raised: its exception is pending */
} train_ctx;

static int on_event(void *data, const qkf_train_event_t *ev)
{
    train_ctx *c = data;
    PyGILState_STATE st = PyGILState_Ensure();
    int stop = 0;
    if (c->failed) {
        stop = 1;
        goto out;
    }
    if (PyErr_CheckSignals() < 0) { /* Ctrl-C: stop (saved), raise KeyboardInterrupt after */
        c->failed = 1, stop = 1;
        goto out;
    }
    if (c->callback != Py_None) {
        static const char *kinds[] = {"log", "step", "epoch", "out"};
        PyObject *d = Py_BuildValue(
            "{s:s,s:z,s:L,s:L,s:L,s:L,s:d,s:d,s:d,s:d,s:d,s:d,s:d}", "kind",
            kinds[ev->kind & 3], "text", ev->text, "epoch", (long long)ev->epoch, "step",
            (long long)ev->step, "total_steps", (long long)ev->total_steps, "steps_per_epoch",
            (long long)ev->steps_per_epoch, "loss", ev->loss, "acc", ev->acc, "test_acc",
            ev->test_acc, "lr", ev->lr, "grad_norm", ev->grad_norm, "img_per_s", ev->img_per_s,
            "seconds", ev->seconds);
        PyObject *r = d ? PyObject_CallOneArg(c->callback, d) : NULL;
        Py_XDECREF(d);
        if (!r)
            c->failed = 1, stop = 1;
        else {
            stop = PyObject_IsTrue(r) == 1;
            Py_DECREF(r);
        }
    }
out:
    PyGILState_Release(st);
    return stop;
}

static PyObject *mod_train(PyObject *self, PyObject *args, PyObject *kw)
{
    (void)self;
    static char *kwlist[] = {"options", "config_path", "callback", NULL};
    PyObject *options, *cfg = Py_None, *callback = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", kwlist, &options, &cfg, &callback))
        return NULL;
    if (callback != Py_None && !PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return NULL;
    }
    qkf_training_t *t = NULL;
    qkf_training_new(&t);
    PyObject *seq = NULL, *ret = NULL;
    int rc;
    if (cfg != Py_None) {
        PyObject *p;
        if (!PyUnicode_FSConverter(cfg, &p))
            goto out;
        rc = qkf_training_read_config(t, PyBytes_AS_STRING(p));
        Py_DECREF(p);
        if (rc) {
            raise_qkf(rc);
            goto out;
        }
    }
    /* (name, value or None) pairs, in order ("resume" first restores its options) */
    if (!(seq = PySequence_Fast(options, "options must be a list of (name, value) pairs")))
        goto out;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        const char *name, *value;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "sz", &name, &value))
            goto out;
        if ((rc = qkf_training_set(t, name, value))) {
            raise_qkf(rc);
            goto out;
        }
    }
    train_ctx c = {callback, 0};
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_training_run(t, on_event, &c);
    Py_END_ALLOW_THREADS
    if (c.failed) {
        if (!PyErr_Occurred())
            PyErr_SetString(QkfError, "training stopped");
        goto out;
    }
    if (rc && rc != QKF_ESTOPPED) {
        raise_qkf(rc);
        goto out;
    }
    ret = PyBool_FromLong(rc == QKF_ESTOPPED);
out:
    Py_XDECREF(seq);
    qkf_training_free(t);
    return ret;
}

static PyObject *mod_set_threads(PyObject *self, PyObject *args)
{
    (void)self;
    int n;
    if (!PyArg_ParseTuple(args, "i", &n))
        return NULL;
    if (n < 1 || n > 1024) {
        PyErr_SetString(PyExc_ValueError, "threads must be in 1..1024");
        return NULL;
    }
    qkf_set_threads(n);
    Py_RETURN_NONE;
}

static PyObject *mod_hw_profiles(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (int i = 0; i < qkf_profile_count(); i++) {
        PyObject *s = PyUnicode_FromString(qkf_profile_bundled(i));
        if (!s || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

/* A profile as a flat dict: name, description, path, cost_basis, and every number by its
 * dotted name ("arith.weight_bits"): ints for integers, floats otherwise. */
static PyObject *mod_hw_profile(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *name;
    if (!PyArg_ParseTuple(args, "O&", PyUnicode_FSConverter, &name))
        return NULL;
    qkf_profile_t *p = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qkf_profile_load(PyBytes_AS_STRING(name), &p);
    Py_END_ALLOW_THREADS
    Py_DECREF(name);
    if (rc)
        return raise_qkf(rc);
    PyObject *d = Py_BuildValue("{s:s,s:s,s:s,s:s}", "name", qkf_profile_name(p), "description",
                                qkf_profile_description(p), "path", qkf_profile_path(p),
                                "cost_basis", qkf_profile_cost_basis(p));
    for (int i = 0; d && i < qkf_profile_num_fields(p); i++) {
        double v;
        const char *k = qkf_profile_field(p, i, &v);
        int integer = strncmp(k, "cost.", 5) && strncmp(k, "hop.", 4) && strncmp(k, "energy.", 7);
        PyObject *val = integer ? PyLong_FromDouble(v) : PyFloat_FromDouble(v);
        if (!val || PyDict_SetItemString(d, k, val) < 0) {
            Py_XDECREF(val);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(val);
    }
    qkf_profile_free(p);
    return d;
}

static PyMethodDef mod_methods[] = {
    {"hw_profiles", mod_hw_profiles, METH_NOARGS, "Names of the bundled chip profiles."},
    {"hw_profile", mod_hw_profile, METH_VARARGS, "A chip profile as a flat dict."},
    {"train", (PyCFunction)(void (*)(void))mod_train, METH_VARARGS | METH_KEYWORDS,
     "Runs a training job; True if the callback stopped it."},
    {"set_threads", mod_set_threads, METH_VARARGS, "OpenMP and BLAS threads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "_qkf", "The C layer of the qkf module (include/qkf/qkf.h).", -1,
    mod_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__qkf(void);
PyMODINIT_FUNC PyInit__qkf(void)
{
    if (PyType_Ready(&NetType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    QkfError = PyErr_NewExceptionWithDoc("qkf.Error",
                                         "A qkf library error: str() is its message, .code its "
                                         "QKF_E* code.",
                                         NULL, NULL);
    Py_INCREF(&NetType);
    if (!QkfError || PyModule_AddObject(m, "Error", QkfError) < 0 ||
        PyModule_AddObject(m, "Net", (PyObject *)&NetType) < 0 ||
        PyModule_AddStringConstant(m, "version", qkf_version_string()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(QkfError);
    return m;
}
